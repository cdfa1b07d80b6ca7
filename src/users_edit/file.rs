//! Reading the users file and writing it back: the [`Snapshot`] a change starts from (with the
//! digest of the bytes read), and [`commit`], which replaces the file atomically under a lock on
//! its folder, only if it still holds what was read. Kept apart from the line editor so that
//! every byte written goes through one place.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use super::EditError;
use crate::users::Digest32;

/// The users file as read, with the digest `commit` compares against.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The file to write: the configured path, or the file a symbolic link there points to.
    pub path: PathBuf,
    /// The bytes read; `None` when the file does not exist (yet).
    pub bytes: Option<Vec<u8>>,
    digest: Option<Digest32>,
}

impl Snapshot {
    /// Reads the users file (a missing file reads as `None`: `add` creates it).
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn read(path: &Path) -> Result<Self, EditError> {
        // Write where a symbolic link points, so that the link stays a link.
        let path = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                std::fs::canonicalize(path).map_err(|source| EditError::Io {
                    path: path.to_owned(),
                    what: "cannot follow the symbolic link",
                    source,
                })?
            }
            _ => path.to_owned(),
        };
        let bytes = read_optional(&path)?;
        let digest = bytes.as_deref().map(digest);
        Ok(Self {
            path,
            bytes,
            digest,
        })
    }

    /// The text read (empty when the file does not exist).
    ///
    /// # Errors
    /// The file is not UTF-8.
    pub fn text(&self) -> Result<&str, EditError> {
        std::str::from_utf8(self.bytes.as_deref().unwrap_or_default())
            .map_err(|_| EditError::Layout("the users file is not UTF-8 text".into()))
    }
}

fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, EditError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EditError::Io {
            path: path.to_owned(),
            what: "cannot read",
            source,
        }),
    }
}

/// Writes `new` over the file of `snapshot`, atomically, provided the file still holds exactly
/// what was read: a temporary file in the same folder with the file's permissions and owner,
/// flushed to disk, then renamed over it (a new file is linked into place, so that a file
/// created meanwhile is never replaced). Other `users` commands wait on a lock on the folder
/// meanwhile, so that two of them never both pass the check.
///
/// # Errors
/// The file changed since it was read ([`EditError::Changed`]), or the folder is not writable,
/// or the owner cannot be kept.
pub fn commit(snapshot: &Snapshot, new: &[u8]) -> Result<(), EditError> {
    let path = &snapshot.path;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| EditError::Io { path, what, source }
    };
    let folder = File::open(&dir).map_err(io("cannot open the folder", &dir))?;
    // Best effort: a file system without locks still has the digest check below.
    let _ = folder.lock();
    let current = read_optional(path)?;
    if current.as_deref().map(digest) != snapshot.digest {
        return Err(EditError::Changed(path.clone()));
    }
    let metadata = std::fs::metadata(path).ok();
    let name = path
        .file_name()
        .map_or_else(|| "users.yml".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = write_temp(&temp, new, metadata.as_ref()).and_then(|()| {
        if snapshot.bytes.is_some() {
            std::fs::rename(&temp, path).map_err(io("cannot replace the file", path))
        } else {
            std::fs::hard_link(&temp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    EditError::Changed(path.clone())
                } else {
                    EditError::Io {
                        path: path.clone(),
                        what: "cannot create the file",
                        source: e,
                    }
                }
            })?;
            std::fs::remove_file(&temp).map_err(io("cannot remove the temporary file", &temp))
        }
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    // The rename itself reaches the disk with the folder.
    let _ = folder.sync_all();
    Ok(())
}

/// Writes the temporary file: created private, then given the old file's mode and owner.
fn write_temp(temp: &Path, new: &[u8], old: Option<&std::fs::Metadata>) -> Result<(), EditError> {
    let io = |what: &'static str| {
        let path = temp.to_owned();
        move |source| EditError::Io { path, what, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io(
            "cannot create a temporary file in the users file's folder (the folder must be \
             writable for this command)",
        ))?;
    file.write_all(new).map_err(io("cannot write"))?;
    if let Some(old) = old {
        let mine = file.metadata().map_err(io("cannot read back"))?;
        if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid())).map_err(|e| {
                EditError::Io {
                    path: temp.to_owned(),
                    what: if old.uid() == mine.uid() {
                        "cannot give the new file the group of the users file (run this command \
                         as a member of that group, or as root)"
                    } else {
                        "cannot give the new file the owner of the users file (run this command \
                         as that user, or as root)"
                    },
                    source: e,
                }
            })?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(
            old.permissions().mode() & 0o7777,
        ))
        .map_err(io("cannot set the permissions"))?;
    }
    file.sync_all().map_err(io("cannot flush to disk"))
}
