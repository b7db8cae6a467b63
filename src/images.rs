//! TEMPORARY STUB (replaced by the real module)
use crate::reference::{Reference, ReferenceError};
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    pub reference_text: String,
    pub reference: Reference,
    pub names: Vec<String>,
    pub volume: String,
}
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("x")]
    X(#[from] ReferenceError),
}
pub fn read_images_json(path: &std::path::Path) -> Result<Vec<ImageEntry>, ImagesError> {
    let _ = path;
    todo!()
}
pub fn volume_name(reference_text: &str) -> String {
    reference_text.into()
}
