//! Loopback ports for fixtures. Tests run in parallel and a fixture binds its port some
//! time after choosing it (a child process starts, a fleet starts its replicas one by one,
//! a killed replica or Redis is restarted on its old port); without a claim list the kernel
//! could hand the same free port to another test meanwhile, whose server would then answer
//! in this test's place.

use std::sync::Mutex;

/// Loopback ports handed out to this process's fixtures so far.
static CLAIMED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback listener on an ephemeral port that no other fixture of this process has been
/// given.
pub fn bind_unclaimed_port() -> std::net::TcpListener {
    loop {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if !claimed.contains(&port) {
            claimed.push(port);
            return listener;
        }
    }
}

/// A free loopback port, claimed for the caller (see [`bind_unclaimed_port`]).
pub fn free_port() -> u16 {
    bind_unclaimed_port()
        .local_addr()
        .expect("a bound address")
        .port()
}
