//! `stock-3`'s server binary: the crate in `benches/stock`, built on first use with its
//! own cargo invocation and target directory (`target/stock`), so that its dependencies'
//! features (fred's defaults) never reach the product binary measured beside it.
//! `BENCH_STOCK_BINARY=<path>` names a build to use instead.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Names a build of `benches/stock` to run instead of building it.
const STOCK_BINARY_ENV: &str = "BENCH_STOCK_BINARY";

/// The path of `stock-cart`, built (once per benchmark run) if no build is named.
pub(crate) fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os(STOCK_BINARY_ENV) {
                return path.into();
            }
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target/stock");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            eprintln!(
                "building stock-3's server (benches/stock) into {}",
                target.display()
            );
            let status = std::process::Command::new(cargo)
                .args(["build", "--release", "--locked", "--manifest-path"])
                .arg(root.join("benches/stock/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("running cargo to build benches/stock");
            assert!(status.success(), "building benches/stock failed: {status}");
            target.join("release/stock-cart")
        })
        .clone()
}
