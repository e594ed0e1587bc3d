//! Load without a verdict of its own: the benchmark's lean generator ([`load`]) and the
//! fault soak with its ledger of every change ([`soak`]).

pub mod load;
pub mod soak;
