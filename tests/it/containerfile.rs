//! The Containerfile, parsed (no container engine here to build it): a Rust builder stage that
//! builds the release binary, a small final stage on the same Debian release (so the same glibc,
//! which hack/check-binary.sh checks against the binary), a non-root USER, and
//! `ENTRYPOINT ["provider-images"]`.

use std::path::Path;

/// One instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn parse(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "a continuation runs past the end");

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => panic!("FROM {args}"),
            };
            stages.push(Stage {
                image: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before any FROM"))
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

fn containerfile() -> Vec<Stage> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile");
    parse(&std::fs::read_to_string(path).expect("Containerfile"))
}

fn all<'a>(stage: &'a Stage, keyword: &str) -> Vec<&'a str> {
    stage
        .instructions
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// The last one counts, as in a build.
fn last<'a>(stage: &'a Stage, keyword: &str) -> Option<&'a str> {
    all(stage, keyword).pop()
}

/// `1.95` of `docker.io/library/rust:1.95-bookworm`.
fn rust_version(image: &str) -> (u32, u32) {
    let tag = image.rsplit_once(':').expect("a tagged rust image").1;
    let version = tag.split('-').next().unwrap();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().expect(version));
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn a_rust_builder_stage_and_a_small_non_root_final_stage() {
    let stages = containerfile();
    assert_eq!(stages.len(), 2, "builder and final: {stages:#?}");
    let (builder, last_stage) = (&stages[0], &stages[1]);

    // The builder: a Rust toolchain at least the crate's rust-version, building the release binary
    // with the lock file.
    let builder_name = builder.name.as_deref().expect("the builder stage is named");
    assert!(
        builder.image.contains("/rust:"),
        "a Rust image: {}",
        builder.image
    );
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let minimum = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| rust_version(&format!("x:{}", v.trim_matches('"'))))
        .expect("rust-version in Cargo.toml");
    assert!(rust_version(&builder.image) >= minimum, "{}", builder.image);
    let runs = all(builder, "RUN");
    assert!(
        runs.iter().any(|r| r.starts_with("cargo build")
            && r.contains("--release")
            && r.contains("--locked")),
        "cargo build --release --locked: {runs:?}"
    );

    // The same Debian release on both sides, so the glibc the binary was linked against is the
    // one it runs on (hack/check-binary.sh assumes distroless cc-debian12, glibc 2.36).
    assert!(builder.image.ends_with("-bookworm"), "{}", builder.image);
    assert_eq!(last_stage.image, "gcr.io/distroless/cc-debian12:nonroot");

    // The final stage: only the binary, from the builder.
    let copies = all(last_stage, "COPY");
    assert_eq!(
        copies,
        [format!(
            "--from={builder_name} /src/target/release/provider-images /usr/local/bin/provider-images"
        )],
        "the binary, and nothing else, from the builder"
    );
    assert!(
        all(builder, "WORKDIR").last() == Some(&"/src"),
        "the builder works in /src"
    );
    assert!(
        all(last_stage, "RUN").is_empty(),
        "nothing runs in the final stage (no shell there)"
    );

    // Non-root, numerically (runAsNonRoot can only check a number).
    let user = last(last_stage, "USER").expect("USER in the final stage");
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: a numeric UID"));
    assert_ne!(uid, 0, "USER {user}: not root");

    let entrypoint = last(last_stage, "ENTRYPOINT").expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint)
        .unwrap_or_else(|e| panic!("ENTRYPOINT {entrypoint}: exec form (a JSON array): {e}"));
    assert_eq!(entrypoint, ["provider-images"]);
    assert!(
        last(last_stage, "CMD").is_none(),
        "arguments come from the pod spec"
    );
}

#[test]
fn the_parser_reads_what_a_build_reads() {
    let stages = parse(
        "# comment\nfrom a:1 AS b\nrun x \\\n  y\n\nFROM c\n# inside\nUSER 1:2\nENTRYPOINT [\"e\"]\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("b"));
    assert_eq!(stages[0].image, "a:1");
    assert_eq!(all(&stages[0], "RUN"), ["x  y"]);
    assert_eq!(stages[1].image, "c");
    assert_eq!(last(&stages[1], "USER"), Some("1:2"));
    assert_eq!(last(&stages[1], "ENTRYPOINT"), Some("[\"e\"]"));
}
