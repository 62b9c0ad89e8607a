//! The operator image archive as others read it.

use std::path::Path;

use anyhow::Result;
use tessera_e2e::tools::Tools;

/// An image archive as go-containerregistry reads it: every layer verified against its digest,
/// then the image's user, entrypoint and layers (JSON, the last line of the check's output).
pub fn check(tools: &Tools, archive: &Path) -> Result<String> {
    tools.check(&["image", &archive.display().to_string()])
}
