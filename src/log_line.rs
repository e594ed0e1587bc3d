//! The log line, written as tracing-subscriber's default (`Full`) format writes it without
//! colours, but without that format's styling machinery: every request writes a line, and
//! `Full` paints each part (span names, braces, colons, target) through `nu_ansi_term` even
//! when colours are off, and formats the time from scratch for every line. [`LogLine`]
//! writes the same characters directly and formats the date and time once per second
//! (docs/benchmark.md has the instructions per request before and after). [`LogFields`]
//! writes the fields of events and spans as `DefaultFields` writes them, also without the
//! painting: `name=value` by `Debug`, the message first and bare, terminal escapes in a
//! message or an error written out as text. A person at a terminal gets
//! tracing-subscriber's own coloured format instead.
//!
//! A line: `2026-12-07T20:44:29.336853Z  INFO request{replica=p method=GET path=/cart}:
//! elastic_cart: served status=200 latency_ms=0.08`.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The uncoloured default format, written directly. See the module's documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLine;

impl<S, N> FormatEvent<S, N> for LogLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record's event names its real target only in its fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str(level(meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The fields of an event or a span, written as `DefaultFields` writes them without colours.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let sanitize = writer.sanitizes_ansi_escapes();
        let mut visitor = FieldWriter {
            writer,
            sanitize,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields one after the other, separated by spaces.
struct FieldWriter<'a> {
    writer: Writer<'a>,
    /// Whether to write terminal escapes out as text (tracing-subscriber's default).
    sanitize: bool,
    first: bool,
    result: fmt::Result,
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let sanitize = self.sanitize;
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{} {}.sources={}",
                    Escaped(format_args!("{value}"), sanitize),
                    field.name(),
                    Sources(source, sanitize)
                ),
            ),
            None => self.record_debug(field, &format_args!("{}", Escaped(value, sanitize))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // A `log` record's metadata, which the line's target already tells.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        self.result = self.result.and_then(|()| match name {
            "message" => write!(self.writer, "{:?}", Escaped(value, self.sanitize)),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{name}={value:?}")
            }
        });
    }
}

/// A value whose terminal control characters (ESC, BEL, BS, FF, DEL and the C1 codes) are
/// written out as text when the flag says so, as tracing-subscriber escapes them.
struct Escaped<T>(T, bool);

impl<T: fmt::Debug> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(EscapingWriter(f), "{:?}", self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(EscapingWriter(f), "{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let controls = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !text.contains(controls) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c if controls(c) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// An error's sources as a list, `[first, second]`, each escaped.
struct Sources<'a>(&'a (dyn std::error::Error + 'static), bool);

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&Escaped(format_args!("{error}"), self.1));
            next = error.source();
        }
        list.finish()
    }
}

/// The level as `Full` writes it: padded to five characters, then two spaces' worth of
/// separation in all (`2026-...Z  INFO request...`).
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch.
type Second = (u64, [u8; 19]);

thread_local! {
    /// The last second this thread wrote, formatted: lines come many per second.
    static LAST_SECOND: Cell<Option<Second>> = const { Cell::new(None) };
}

/// `2026-12-07T20:44:29.336853Z ` (UTC, microseconds, then a space), as `Full` writes its
/// default timer's time.
fn write_time(writer: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let date_time = match LAST_SECOND.get() {
        Some((second, text)) if second == secs => text,
        _ => {
            let text = date_time(secs);
            LAST_SECOND.set(Some((secs, text)));
            text
        }
    };
    writer.write_str(std::str::from_utf8(&date_time).map_err(|_| fmt::Error)?)?;
    let mut fraction = *b".000000Z ";
    let mut micros = since.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    writer.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, in UTC. Unlike tracing-subscriber's
/// timer, a clock before 1970 or past the year 9999 writes the epoch: no replica runs then.
fn date_time(secs: u64) -> [u8; 19] {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, u32::try_from(at.year()).unwrap_or(0));
    put(5, 2, u32::from(u8::from(at.month())));
    put(8, 2, u32::from(at.day()));
    put(11, 2, u32::from(at.hour()));
    put(14, 2, u32::from(at.minute()));
    put(17, 2, u32::from(at.second()));
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Lines written into memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The same events, some in spans, some with characters a terminal would obey.
    fn events() {
        let span = tracing::info_span!("request", replica = %"replica-0", method = %"GET", path = %"/cart");
        span.in_scope(|| {
            let latency_ms = format_args!("{:.2}", 0.0812);
            tracing::info!(status = 200u16, latency_ms, "served");
            let inner = tracing::info_span!("change");
            inner.in_scope(|| tracing::warn!(attempt = 2, "lost a race\x1b[31m"));
            tracing::info_span!("empty", field = tracing::field::Empty)
                .in_scope(|| tracing::error!(reason = "a \"quoted\" text", "gave up"));
            let failure = std::io::Error::other(Outer);
            tracing::warn!(
                error = &failure as &(dyn std::error::Error + 'static),
                r#type = "store",
                "\u{9b}failed \x07"
            );
            let alone = std::io::Error::other("no source\x1b");
            tracing::warn!(
                error = &alone as &(dyn std::error::Error + 'static),
                "failed alone"
            );
            tracing::info!(
                message = "a str message \x08",
                count = 3u64,
                ok = true,
                ratio = 0.5
            );
        });
        tracing::debug!(name = "no span", "plain");
        // What fred logs through the `log` crate.
        tracing_log::format_trace(
            &log::Record::builder()
                .target("fred::router::responses")
                .level(log::Level::Warn)
                .module_path(Some("fred::router::responses"))
                .file(Some("src/router/responses.rs"))
                .line(Some(7))
                .args(format_args!("fred-1: Broadcasting error"))
                .build(),
        )
        .unwrap();
    }

    /// An error with a source, both with a terminal escape.
    #[derive(Debug)]
    struct Outer;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer\x1b[1m")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Inner)
        }
    }

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner\x7f")
        }
    }

    impl std::error::Error for Inner {}

    fn lines(subscriber: impl Subscriber + Send + Sync + 'static, written: &Lines) -> String {
        tracing::subscriber::with_default(subscriber, events);
        String::from_utf8(written.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn writes_what_the_default_format_writes_without_colours() {
        let ours = Lines::default();
        let theirs = Lines::default();
        let ours = lines(
            tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_writer(ours.clone())
                .with_ansi(false)
                .fmt_fields(LogFields)
                .event_format(LogLine)
                .finish(),
            &ours,
        );
        let theirs = lines(
            tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_writer(theirs.clone())
                .with_ansi(false)
                .finish(),
            &theirs,
        );
        let after_time = |text: &str| -> Vec<String> {
            text.lines()
                .map(|line| line.split_once("Z ").expect("a time").1.to_owned())
                .collect()
        };
        assert_eq!(
            after_time(&ours),
            after_time(&theirs),
            "ours:\n{ours}\ntheirs:\n{theirs}"
        );
        assert_eq!(ours.lines().count(), 8);
        assert!(
            ours.contains(" WARN fred::router::responses: fred-1: Broadcasting error\n"),
            "a log record's own target: {ours}"
        );
        assert!(ours.contains(r"\x1b"), "escapes kept: {ours}");
    }

    #[test]
    fn the_time_is_utc_with_microseconds() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_796_675_069_336_853);
        let mut text = String::new();
        write_time(&mut Writer::new(&mut text), at).unwrap();
        assert_eq!(text, "2026-12-07T20:24:29.336853Z ");
        let mut text = String::new();
        write_time(&mut Writer::new(&mut text), UNIX_EPOCH).unwrap();
        assert_eq!(text, "1970-01-01T00:00:00.000000Z ");
    }
}
