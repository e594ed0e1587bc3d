//! Load without a verdict of its own: the benchmark's lean generator ([`load`]), the
//! fault soak with its ledger of every change ([`soak`]) and a flood of new sessions from
//! many addresses ([`flood`]) and shoppers who change one cart from two tabs at once
//! ([`two_tabs`]).

pub mod flood;
pub mod load;
pub mod soak;
pub mod two_tabs;
