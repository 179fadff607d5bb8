//! Image builds: build contexts (spec files + source, `.dockerignore`, tar), content hashes
//! and image names, and Containerfile checks. Never runs containers.

pub mod containerfile;
pub mod context;
pub mod dockerignore;
pub mod heredoc;

/// The image name for a content hash: the same inputs give the same name in every app, so a
/// second app from the same source and spec reuses the image.
pub fn image_name(content_hash: &str) -> String {
    format!("berth-build:{}", &content_hash[..16])
}
