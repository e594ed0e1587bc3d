//! What a request may cost a replica: the sizes and deadlines of its head and body, and
//! how many connections may wait to be accepted.
//!
//! A leaf: the server that enforces the head's limits, the routes that guard bodies and the
//! error type that names the limits in its messages all read them here, so none of those
//! needs another.

use std::time::Duration;

/// Longest a client may take to send a request's head (and longest a keep-alive connection
/// may sit idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head (request line and headers) read; a larger one, or one with more
/// than hyper's 100 headers, is answered 431. Above hyper's own 64 KiB limit of a URI, so a
/// long URI is answered 414, not 431.
pub const MAX_HEAD_BYTES: usize = 96 * 1024;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest a whole request body may take to arrive, from the request's start.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of a body a replica reads and throws away after answering without reading it
/// (413 over the limit, 403 cross-site, 415, 404, ...), so that a client still sending it
/// reads the answer instead of a reset (the kernel resets a connection closed with unread
/// data). A body declared longer than this is not read: the connection closes after the
/// answer; no ordinary client sends one, and reading it would cost more than it is worth.
pub const MAX_DRAINED_BYTES: usize = 4 * 1024 * 1024;

/// Connections the kernel queues for a replica before it accepts them (capped by the
/// kernel's `net.core.somaxconn`, 4096 on current Linux). nginx opens an upstream
/// connection for every request in flight beyond its idle ones (`keepalive`), so a burst
/// of users opens hundreds at once; past the queue the kernel drops their handshakes,
/// nginx's 250 ms connect timeout counts a failure, and `max_fails=1` takes the replica
/// out for 5 s. With the standard 128, 1024 users failed most of their requests
/// (docs/benchmark.md).
pub const LISTEN_BACKLOG: u32 = 4096;
