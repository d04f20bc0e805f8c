use std::path::PathBuf;

/// What the lab stage reads of `canary.yaml`: where canary repos, reports and caches live, and
/// what the base image is built from. The whole file (with the release and control-plane
/// sections) is parsed and checked by the `canary` crate, which hands this part down.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An image to use as the base instead of building one with debootstrap.
    pub base_image: Option<String>,
    /// Debian mirror for debootstrap; `None` takes the machine's apt configuration.
    pub debian_mirror: Option<String>,
    /// Debian release the base image is built from.
    pub debian_release: String,
    pub repos_dir: PathBuf,
    pub reports_dir: PathBuf,
    /// Downloads, checkouts and temporary root filesystems.
    pub cache_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_image: None,
            debian_mirror: None,
            debian_release: "bookworm".into(),
            repos_dir: "canary-repos".into(),
            reports_dir: "reports".into(),
            cache_dir: ".canary/cache".into(),
        }
    }
}
