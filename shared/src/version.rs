//! The version a process runs as. A signed update exec'd by the launcher
//! (`syncstream-update`) runs as the version its bundle was signed as, handed over in
//! [`UPDATE_VERSION_ENV`]; otherwise it is the workspace's version.

/// Environment variable holding the signed version of an exec'd update.
pub const UPDATE_VERSION_ENV: &str = "SYNCSTREAM_UPDATE_VERSION";

/// The running version: the signed version of an exec'd update, else this build's.
pub fn running() -> String {
    std::env::var(UPDATE_VERSION_ENV).unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}
