//! Shared by the fuzz targets: the parsers under test read files, so each input is
//! written to a scratch file first (in /dev/shm when it exists, else the temp dir).

use std::path::PathBuf;

/// A scratch directory private to this fuzzing process.
pub fn scratch_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("latentevo-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `data` to `name` in the scratch directory and returns its path.
pub fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// Restores the default panic hook. libfuzzer-sys installs one that aborts on every
/// panic, even one the code under test catches on purpose (the model crate catches the
/// panics of the `tokenizers` crate and returns an error); a panic that escapes the
/// target still aborts, because libfuzzer-sys checks the target's result.
pub fn default_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::panic::take_hook();
    });
}
