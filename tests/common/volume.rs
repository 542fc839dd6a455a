//! A directory laid out like a Kubernetes ConfigMap or Secret volume, and
//! updated the way the kubelet updates one: every file `NAME` is a symlink
//! to `..data/NAME`, `..data` a symlink to a timestamped directory; an
//! update writes a new timestamped directory, renames a new `..data` link
//! over the old one, and removes the old directory.

use std::path::{Path, PathBuf};

/// A volume's directory.
pub struct Volume {
    /// Where it is mounted.
    pub dir: PathBuf,
    /// Updates so far (names the timestamped directories).
    generation: u32,
    /// The current timestamped directory.
    current: PathBuf,
}

impl Volume {
    /// Creates the volume in `dir` (made if missing) holding `files`.
    pub fn new(dir: &Path, files: &[(&str, &[u8])]) -> Volume {
        std::fs::create_dir_all(dir).unwrap();
        let mut v = Volume {
            dir: dir.to_path_buf(),
            generation: 0,
            current: PathBuf::new(),
        };
        v.current = v.write_generation(files);
        std::os::unix::fs::symlink(v.current.file_name().unwrap(), dir.join("..data")).unwrap();
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    /// The path an application reads `name` at.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces every file at once (the same names as at creation).
    pub fn update(&mut self, files: &[(&str, &[u8])]) {
        let next = self.write_generation(files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(next.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(&self.current).unwrap();
        self.current = next;
    }

    fn write_generation(&mut self, files: &[(&str, &[u8])]) -> PathBuf {
        self.generation += 1;
        let dir = self.dir.join(format!(
            "..2026_12_07_10_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        ));
        std::fs::create_dir(&dir).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        dir
    }
}
