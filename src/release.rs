//! `syncstream release`: release keys and signed update bundles.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use syncstream_update::{bundle, keys};

/// Arguments of `syncstream release`.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(Subcommand, Debug)]
enum ReleaseCommand {
    /// Make a release key: writes the secret key file (mode 0600, never overwritten)
    /// and prints the public key that devices pin (`[update] public_key`).
    Keygen {
        /// Where to write the secret key.
        #[arg(long)]
        secret: PathBuf,
    },
    /// Print the public key of a secret key file.
    PublicKey {
        /// The secret key file.
        #[arg(long)]
        secret: PathBuf,
    },
    /// Sign a binary into a bundle `syncstream-<version>-<target>.bundle` and print
    /// its manifest as JSON.
    Sign {
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The binary to ship.
        #[arg(long)]
        binary: PathBuf,
        /// Its version (semver; default: this tool's version).
        #[arg(long, default_value = syncstream_update::PACKAGE_VERSION)]
        version: String,
        /// Its Rust target triple (default: this tool's target).
        #[arg(long, default_value = syncstream_update::BUILD_TARGET)]
        target: String,
        /// Folder to write the bundle into (the transmitter's `updates_dir`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle with a public key, as a device would; prints its manifest.
    Verify {
        /// The release public key (64 hex digits).
        #[arg(long)]
        public_key: String,
        /// The bundle file.
        bundle: PathBuf,
    },
}

/// Runs `syncstream release ...`.
pub fn run(a: ReleaseArgs) -> anyhow::Result<()> {
    match a.command {
        ReleaseCommand::Keygen { secret } => {
            let key = keys::generate()?;
            keys::write_secret(&secret, &key)?;
            eprintln!(
                "secret key written to {} (keep it off the devices)",
                secret.display()
            );
            println!("{}", keys::public_hex(&key));
        }
        ReleaseCommand::PublicKey { secret } => {
            println!("{}", keys::public_hex(&keys::read_secret(&secret)?));
        }
        ReleaseCommand::Sign {
            key,
            binary,
            version,
            target,
            out,
        } => {
            let key = keys::read_secret(&key)?;
            let meta = std::fs::metadata(&binary)
                .with_context(|| format!("cannot read the binary {}", binary.display()))?;
            if meta.len() > bundle::MAX_BINARY_BYTES {
                anyhow::bail!(
                    "{}: {} bytes, more than a bundle may carry ({})",
                    binary.display(),
                    meta.len(),
                    bundle::MAX_BINARY_BYTES
                );
            }
            let bin = syncstream_shared::fsutil::read_input(
                &binary,
                bundle::MAX_BINARY_BYTES,
                "the binary",
            )?;
            let manifest = bundle::sign(&bin, &version, &target, &key)
                .with_context(|| format!("cannot sign {}", binary.display()))?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let path = out.join(format!("syncstream-{version}-{target}.bundle"));
            syncstream_shared::fsutil::write_atomic(&path, &bundle::encode(&manifest, &bin))?;
            eprintln!("bundle written to {}", path.display());
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        ReleaseCommand::Verify {
            public_key,
            bundle: path,
        } => {
            let key = keys::parse_public(&public_key)?;
            let bytes = syncstream_shared::fsutil::read_input(
                &path,
                bundle::MAX_BUNDLE_BYTES,
                "the bundle",
            )?;
            let (manifest, _) = bundle::open(&bytes, &key)
                .with_context(|| format!("bundle {} refused", path.display()))?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
}
