//! The font of the benchmarks' charts, shared by `benches/fleet` and
//! `benches/sticky_vs_shared` (each includes this file).

use plotters::style::FontStyle;

/// Registers DejaVu Sans as plotters' "sans-serif"; panics naming the Debian package if it
/// is missing.
pub(crate) fn register_sans() {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("DejaVuSans.ttf: install the Debian package fonts-dejavu-core");
    let _ = plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    );
}
