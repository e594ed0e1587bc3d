//! The lost-update experiment in the benchmark's run: the test kit's two-tab shoppers
//! ([`testkit::two_tabs`]) against `stock-3` and `fleet-3`, each on a fleet of its own
//! (fresh servers, an empty store), one after the other.

use testkit::two_tabs::{TwoTabsOptions, TwoTabsTally, two_tabs};

use crate::servers::{self, ReplicaSettings};

/// The configurations compared, in the order run.
const CONFIGS: [&str; 2] = ["stock-3", "fleet-3"];

/// One configuration's result.
pub(crate) struct LostUpdates {
    pub name: &'static str,
    pub options: TwoTabsOptions,
    pub tally: TwoTabsTally,
}

/// Runs the experiment against each of [`CONFIGS`].
pub(crate) fn run(options: TwoTabsOptions, replica: &ReplicaSettings) -> Vec<LostUpdates> {
    CONFIGS
        .iter()
        .map(|name| {
            let setup = crate::SETUPS
                .iter()
                .find(|setup| setup.name == *name)
                .expect("a configuration of the benchmark");
            let running = servers::start(&crate::shape(setup), replica);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let tally = runtime.block_on(two_tabs(&running.target, options));
            eprintln!(
                "lost updates, {name}: {} units acknowledged, {} in the carts, {} lost, {} unacknowledged in the carts, {} adds refused, {} shoppers failed",
                tally.acknowledged,
                tally.in_carts,
                tally.lost,
                tally.unacknowledged_in_carts,
                tally.refused,
                tally.failed_shoppers
            );
            LostUpdates {
                name: setup.name,
                options,
                tally,
            }
        })
        .collect()
}
