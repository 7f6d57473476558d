//! Finding the installed server programs: Debian keeps one directory per major version
//! (/usr/lib/postgresql/VERSION/bin), off PATH; an existing cluster needs its own major
//! version.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::EmbeddedError;

/// The directory holding both `initdb` and `postgres`: `explicit` only, else the
/// cluster's major version under /usr/lib/postgresql, else the highest there, else PATH.
pub(super) fn find(
    explicit: Option<&Path>,
    cluster_version: Option<&str>,
) -> Result<PathBuf, EmbeddedError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(dir) => vec![dir.to_path_buf()],
        None => {
            let root = Path::new("/usr/lib/postgresql");
            let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    let key = name
                        .split('.')
                        .map(str::parse)
                        .collect::<Result<Vec<u32>, _>>()
                        .ok()?;
                    let rank = u32::from(Some(name.as_str()) == cluster_version);
                    Some((
                        std::iter::once(rank).chain(key).collect(),
                        entry.path().join("bin"),
                    ))
                })
                .collect();
            versions.sort_by(|a, b| b.0.cmp(&a.0));
            let path = std::env::var_os("PATH").unwrap_or_default();
            versions
                .into_iter()
                .map(|(_, dir)| dir)
                .chain(std::env::split_paths(&path))
                .collect()
        }
    };
    let executable =
        |p: PathBuf| fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    candidates
        .iter()
        .find(|dir| executable(dir.join("initdb")) && executable(dir.join("postgres")))
        .cloned()
        .ok_or_else(|| EmbeddedError::BinariesMissing {
            searched: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}
