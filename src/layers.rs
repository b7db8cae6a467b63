//! TEMPORARY STUB (replaced by the real module)
pub const SUBTREE: &str = "capi-operator-manifests";
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}
impl Compression {
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let _ = media_type;
        None
    }
}
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_size: u64,
    pub max_image_size: u64,
}
#[derive(Debug, Clone)]
pub struct Contribution;
impl Contribution {
    pub fn is_empty(&self) -> bool {
        true
    }
}
pub fn contribution<R: std::io::Read>(
    reader: R,
    compression: Compression,
    compressed_size: u64,
    limits: &Limits,
) -> Result<Contribution, LayerError> {
    let _ = (reader, compression, compressed_size, limits);
    todo!()
}
#[derive(Debug, Default, Clone)]
pub struct Subtree;
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
}
impl Subtree {
    pub fn new() -> Subtree {
        Subtree
    }
    pub fn apply(&mut self, layer: &Contribution, limits: &Limits) -> Result<(), LayerError> {
        let _ = (layer, limits);
        todo!()
    }
    pub fn exists(&self) -> bool {
        todo!()
    }
    pub fn entries(&self) -> impl Iterator<Item = (&str, Node<'_>)> {
        std::iter::empty()
    }
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        let _ = path;
        todo!()
    }
    pub fn is_dir(&self, path: &str) -> bool {
        let _ = path;
        todo!()
    }
    pub fn children(&self, path: &str) -> Vec<&str> {
        let _ = path;
        todo!()
    }
    pub fn total_bytes(&self) -> u64 {
        todo!()
    }
}
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("x")]
    X,
}
