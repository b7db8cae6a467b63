//! `--cluster-dir`: the same objects as the API reader, from YAML/JSON dumps read recursively —
//! `oc get <kind> -o yaml|json` output (single objects or `List`s), multi-document files, and
//! must-gather trees (`cluster-scoped-resources/<group>/<plural>/<name>.yaml`,
//! `namespaces/<ns>/core/configmaps.yaml` as a typed list).
//!
//! Objects are recognised by apiVersion + kind (and namespace/name for the singletons), never by
//! file name, so any layout works. Files that are not Kubernetes objects are ignored; a file that
//! does not parse is an error, because silently skipping it could drop a mirror rule.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::image_list::{self, IMAGES_CONFIG_MAP, INSTALLER_CONFIG_MAP};
use super::names::{
    CONFIG_NAMESPACE, IMAGE_CONFIG, MANAGED_NAMESPACE, PULL_SECRET, TRUSTED_CA_BUNDLE,
    USER_CA_BUNDLE,
};
use super::objects::{self, Known, Named};
use super::{ClusterConfig, ClusterError, notes};

/// Identity of a recognised object: kind, namespace ("" when cluster-scoped), name.
type Key = (Known, String, String);

/// Every recognised object with the files it was found in (more than one is an error, reported
/// only for objects actually used, so an unrelated duplicate in a must-gather does no harm).
#[derive(Default)]
struct Found {
    objects: BTreeMap<Key, Vec<(PathBuf, Value)>>,
    /// Where the operator's images ConfigMaps are looked for, when they are.
    image_list_namespace: Option<String>,
}

/// Reads a dump; the image list too when `image_list_namespace` is given. The cluster's proxy
/// object is never read from a dump: the machine reading it is not behind that proxy.
pub(super) fn read(
    dir: &Path,
    image_list_namespace: Option<&str>,
) -> Result<ClusterConfig, ClusterError> {
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    walk(dir, &mut files, &mut visited)?;
    let mut found = Found {
        image_list_namespace: image_list_namespace.map(str::to_string),
        ..Found::default()
    };
    for path in &files {
        for document in documents(path)? {
            for object in expand(document) {
                found.add(path, object);
            }
        }
    }
    tracing::debug!(dir = %dir.display(), files = files.len(), objects = found.objects.len(), "cluster dump read");
    found.assemble()
}

/// Collects `*.yaml`, `*.yml` and `*.json` under `path` in sorted order (so errors and results do
/// not depend on the filesystem's order). Hidden entries are skipped: that drops editor and OS
/// litter, and the kubelet's `..data`/`..<timestamp>` directories when the dumps are a mounted
/// ConfigMap, whose files would otherwise all be seen twice.
fn walk(
    path: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), ClusterError> {
    let io_error = |e: std::io::Error| ClusterError::Dump {
        path: path.to_path_buf(),
        cause: e.to_string(),
    };
    let metadata = fs::metadata(path).map_err(io_error)?;
    if metadata.is_file() {
        if has_dump_extension(path) {
            files.push(path.to_path_buf());
        }
        return Ok(());
    }
    if !metadata.is_dir() {
        return Ok(());
    }
    // Symlinked directories are followed; remembering where we have been stops a loop.
    if !visited.insert(fs::canonicalize(path).map_err(io_error)?) {
        return Ok(());
    }
    let mut entries = fs::read_dir(path)
        .map_err(io_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden {
            walk(&entry, files, visited)?;
        }
    }
    Ok(())
}

fn has_dump_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn is_json(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("json")
}

/// Every document of a file: a JSON file may hold several concatenated values, a YAML file
/// several `---`-separated documents.
fn documents(path: &Path) -> Result<Vec<Value>, ClusterError> {
    let dump_error = |cause: String| ClusterError::Dump {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = fs::read(path).map_err(|e| dump_error(e.to_string()))?;
    parse_documents(&bytes, is_json(path)).map_err(dump_error)
}

fn parse_documents(bytes: &[u8], json: bool) -> Result<Vec<Value>, String> {
    if json {
        serde_json::Deserializer::from_slice(bytes)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not valid JSON: {e}"))
    } else {
        serde_yaml_ng::Deserializer::from_slice(bytes)
            .map(Value::deserialize)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not valid YAML: {e}"))
    }
}

/// For `crate::fuzz`: one dump file's bytes (named `path`, which says JSON or YAML) read as
/// [`read`] reads a directory holding only it.
pub(crate) fn read_file_bytes(
    path: &Path,
    bytes: &[u8],
    image_list_namespace: Option<&str>,
) -> Result<ClusterConfig, ClusterError> {
    let documents = parse_documents(bytes, is_json(path)).map_err(|cause| ClusterError::Dump {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut found = Found {
        image_list_namespace: image_list_namespace.map(str::to_string),
        ..Found::default()
    };
    for object in documents.into_iter().flat_map(expand) {
        found.add(path, object);
    }
    found.assemble()
}

/// A document → the objects in it: itself, or the items of a `List` / `<Kind>List`. Items of a
/// typed list may omit apiVersion and kind (the API server drops them); the list's own say
/// what they are.
fn expand(document: Value) -> Vec<Value> {
    let Value::Object(mut map) = document else {
        return Vec::new();
    };
    let list_kind = map
        .get("kind")
        .and_then(Value::as_str)
        .and_then(|k| k.strip_suffix("List"))
        .map(str::to_string);
    let (Some(item_kind), Some(Value::Array(items))) = (list_kind, map.remove("items")) else {
        return vec![Value::Object(map)];
    };
    let list_api_version = map.get("apiVersion").cloned();
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(fields) = &mut item
                && !item_kind.is_empty()
            {
                if !fields.contains_key("kind") {
                    fields.insert("kind".into(), Value::String(item_kind.clone()));
                }
                if let (false, Some(v)) = (fields.contains_key("apiVersion"), &list_api_version) {
                    fields.insert("apiVersion".into(), v.clone());
                }
            }
            item
        })
        .collect()
}

impl Found {
    fn add(&mut self, path: &Path, object: Value) {
        let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
        let Some(known) = Known::classify(field("apiVersion"), field("kind")) else {
            return;
        };
        let (namespace, name) = Named::of(&object);
        let (namespace, name) = (namespace.unwrap_or_default(), name.unwrap_or_default());
        let wanted = match known {
            Known::Mirror(_) => true,
            Known::Image => name == IMAGE_CONFIG,
            // Any ConfigMap in openshift-config may be the additionalTrustedCA one; that is known
            // only once the Image has been seen.
            Known::ConfigMap => {
                namespace == CONFIG_NAMESPACE
                    || (namespace == MANAGED_NAMESPACE && name == TRUSTED_CA_BUNDLE)
                    || (self.image_list_namespace.as_deref() == Some(namespace.as_str())
                        && (name == IMAGES_CONFIG_MAP || name == INSTALLER_CONFIG_MAP))
            }
            Known::Secret => namespace == CONFIG_NAMESPACE && name == PULL_SECRET,
            Known::ClusterImagePolicy | Known::ImagePolicy => true,
        };
        if wanted {
            self.objects
                .entry((known, namespace, name))
                .or_default()
                .push((path.to_path_buf(), object));
        }
    }

    /// The single copy of an object, if any; two copies are an error naming both files, since
    /// picking one would be a guess.
    fn take(&mut self, key: &Key, what: &str) -> Result<Option<(PathBuf, Value)>, ClusterError> {
        let Some(mut copies) = self.objects.remove(key) else {
            return Ok(None);
        };
        if copies.len() > 1 {
            return Err(ClusterError::Dump {
                path: copies[0].0.clone(),
                cause: format!("{what} is also in {}; keep one copy", copies[1].0.display()),
            });
        }
        Ok(copies.pop())
    }

    fn assemble(mut self) -> Result<ClusterConfig, ClusterError> {
        let mut config = ClusterConfig::default();

        let mirror_keys: Vec<Key> = self
            .objects
            .keys()
            .filter(|(known, _, _)| matches!(known, Known::Mirror(_)))
            .cloned()
            .collect();
        for key in mirror_keys {
            let Known::Mirror(kind) = key.0 else {
                continue;
            };
            let what = format!("{kind:?} {}", key.2);
            if let Some((path, object)) = self.take(&key, &what)? {
                let mirror =
                    objects::mirror_object(kind, &object).map_err(|cause| ClusterError::Dump {
                        path,
                        cause: format!("{kind:?}: {cause}"),
                    })?;
                config.mirror_objects.push(mirror);
            }
        }

        let policy_keys: Vec<Key> = self
            .objects
            .keys()
            .filter(|(known, _, _)| matches!(known, Known::ClusterImagePolicy | Known::ImagePolicy))
            .cloned()
            .collect();
        for key in policy_keys {
            let cluster = key.0 == Known::ClusterImagePolicy;
            let what = match key.0 {
                Known::ClusterImagePolicy => format!("ClusterImagePolicy {}", key.2),
                _ => format!("ImagePolicy {}/{}", key.1, key.2),
            };
            if let Some((path, object)) = self.take(&key, &what)? {
                let policy = objects::image_policy(cluster, &object).map_err(|cause| {
                    ClusterError::Dump {
                        path,
                        cause: format!("{what}: {cause}"),
                    }
                })?;
                config.image_policies.push(policy);
            }
        }

        let image_key = (Known::Image, String::new(), IMAGE_CONFIG.to_string());
        match self.take(&image_key, "Image cluster")? {
            Some((path, object)) => {
                let (additional, sources) =
                    objects::image_config(&object).map_err(|cause| ClusterError::Dump {
                        path,
                        cause: format!("Image cluster: {cause}"),
                    })?;
                config.additional_trusted_ca = additional;
                config.registry_sources = sources;
            }
            None => config.note(notes::image_missing()),
        }

        self.add_ca_bundles(&mut config, MANAGED_NAMESPACE, TRUSTED_CA_BUNDLE, None)?;
        self.add_ca_bundles(&mut config, CONFIG_NAMESPACE, USER_CA_BUNDLE, None)?;
        if let Some(name) = config.additional_trusted_ca.clone()
            && name != USER_CA_BUNDLE
        {
            self.add_ca_bundles(
                &mut config,
                CONFIG_NAMESPACE,
                &name,
                Some("image.config additionalTrustedCA"),
            )?;
        }

        let secret_key = (
            Known::Secret,
            CONFIG_NAMESPACE.to_string(),
            PULL_SECRET.to_string(),
        );
        match self.take(&secret_key, &notes::pull_secret())? {
            Some((path, object)) => {
                let origin = path.display().to_string();
                config.pull_secret =
                    objects::pull_secret(&origin, &object, &mut config).map_err(|cause| {
                        ClusterError::Dump {
                            path,
                            cause: format!("{}: {cause}", notes::pull_secret()),
                        }
                    })?;
            }
            None => config.note(notes::pull_secret_missing(&notes::pull_secret())),
        }
        if let Some(namespace) = self.image_list_namespace.clone() {
            config.image_list = self.image_list(&namespace, &mut config)?;
        }
        Ok(config)
    }

    /// The first of the operator's images ConfigMaps the dump holds, as an image list.
    fn image_list(
        &mut self,
        namespace: &str,
        config: &mut ClusterConfig,
    ) -> Result<Option<image_list::ImageList>, ClusterError> {
        for name in [IMAGES_CONFIG_MAP, INSTALLER_CONFIG_MAP] {
            let what = notes::config_map(namespace, name);
            let key = (Known::ConfigMap, namespace.to_string(), name.to_string());
            if let Some((path, object)) = self.take(&key, &what)? {
                let suffix = format!(" (in {})", path.display());
                return image_list::from_config_map(namespace, name, &object, &suffix)
                    .map(Some)
                    .map_err(|cause| ClusterError::Dump {
                        path,
                        cause: format!("{what}: {cause}"),
                    });
            }
            config.note(match name {
                IMAGES_CONFIG_MAP => image_list::first_missing(namespace),
                _ => image_list::both_missing(namespace),
            });
        }
        Ok(None)
    }

    fn add_ca_bundles(
        &mut self,
        config: &mut ClusterConfig,
        namespace: &str,
        name: &str,
        named_by: Option<&str>,
    ) -> Result<(), ClusterError> {
        let what = notes::config_map(namespace, name);
        let key = (Known::ConfigMap, namespace.to_string(), name.to_string());
        let Some((path, object)) = self.take(&key, &what)? else {
            config.note(notes::config_map_missing(&what, named_by));
            return Ok(());
        };
        let bundles = objects::ca_bundles(namespace, name, &object, config).map_err(|cause| {
            ClusterError::Dump {
                path,
                cause: format!("{what}: {cause}"),
            }
        })?;
        config.ca_bundles.extend(bundles);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_list_items_inherit_kind_and_api_version() {
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "items": [
            {"metadata": {"name": "a"}},
            {"apiVersion": "v2", "kind": "Other", "metadata": {"name": "b"}}
        ]});
        let items = expand(list);
        assert_eq!(items[0]["kind"], "ConfigMap");
        assert_eq!(items[0]["apiVersion"], "v1");
        assert_eq!(items[1]["kind"], "Other");
        assert_eq!(items[1]["apiVersion"], "v2");
    }

    #[test]
    fn generic_list_items_keep_their_own_types_and_non_objects_vanish() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"metadata": {}}]});
        let items = expand(list);
        assert!(items[0].get("kind").is_none());
        assert!(expand(json!([1, 2])).is_empty());
        assert!(expand(Value::Null).is_empty());
        // A "List" kind without items is just an object of that kind.
        assert_eq!(expand(json!({"kind": "ConfigMapList"})).len(), 1);
    }

    fn policy_yaml(api_version: &str, kind: &str, metadata: &str, spec: &str) -> String {
        format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {metadata}\nspec: {spec}\n")
    }

    const SPEC: &str = "{scopes: [quay.io/x], policy: {rootOfTrust: {policyType: PublicKey, \
                        publicKey: {keyData: a2V5}}}}";

    /// signature-policy §1: v1alpha1 (4.16–4.19) objects read as v1's, every namespace's
    /// ImagePolicies kept (rendering picks one namespace).
    #[test]
    fn v1alpha1_policies_are_read_like_v1() {
        let dir = tempfile::tempdir().unwrap();
        let documents = [
            policy_yaml(
                "config.openshift.io/v1alpha1",
                "ClusterImagePolicy",
                "{name: old}",
                SPEC,
            ),
            policy_yaml(
                "config.openshift.io/v1",
                "ClusterImagePolicy",
                "{name: new}",
                SPEC,
            ),
            policy_yaml(
                "config.openshift.io/v1alpha1",
                "ImagePolicy",
                "{name: ip, namespace: ns}",
                SPEC,
            ),
        ];
        fs::write(dir.path().join("policies.yaml"), documents.join("---\n")).unwrap();
        let config = read(dir.path(), None).unwrap();
        let read: Vec<(String, Vec<String>)> = config
            .image_policies
            .iter()
            .map(|p| (p.object.to_string(), p.spec.scopes.clone()))
            .collect();
        let scopes = || vec!["quay.io/x".to_string()];
        assert_eq!(
            read,
            [
                ("ClusterImagePolicy new".to_string(), scopes()),
                ("ClusterImagePolicy old".to_string(), scopes()),
                ("ImagePolicy ns/ip".to_string(), scopes()),
            ]
        );
    }

    /// signature-policy §1: a spec without its required `policy` fails the read, naming the
    /// file and the object, instead of dropping a policy.
    #[test]
    fn malformed_policy_names_the_file_and_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip.yaml");
        let spec = "{scopes: [quay.io/x]}";
        let yaml = policy_yaml(
            "config.openshift.io/v1",
            "ImagePolicy",
            "{name: bad, namespace: ns}",
            spec,
        );
        fs::write(&path, yaml).unwrap();
        match read(dir.path(), None) {
            Err(ClusterError::Dump { path: p, cause }) => {
                assert_eq!(p, path);
                assert!(cause.starts_with("ImagePolicy ns/bad: "), "{cause}");
                assert!(cause.contains("policy"), "{cause}");
            }
            other => panic!("expected a dump error, got {other:?}"),
        }
    }
}
