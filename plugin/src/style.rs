//! How text reaches the terminal: its width, whether colour is wanted, and the bars.

use std::io::IsTerminal;

/// The colours the views use, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Busy,
    Bad,
    Faint,
    Strong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub width: usize,
    pub colour: bool,
}

/// Narrower than this, bars and load are left out.
pub const NARROW: usize = 70;

impl Style {
    /// Standard output's: its width (`COLUMNS`, else the terminal's, else 100) and colour only
    /// on a terminal without `NO_COLOR`.
    pub fn of_stdout() -> Self {
        let stdout = std::io::stdout();
        let terminal = stdout.is_terminal();
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .or_else(|| terminal.then(terminal_width).flatten())
            .unwrap_or(100);
        Self {
            width,
            colour: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Busy => "33",
            Tone::Bad => "31",
            Tone::Faint => "2",
            Tone::Strong => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    pub fn is_narrow(&self) -> bool {
        self.width < NARROW
    }
}

/// A bar of `width` cells, `fraction` of them full.
pub fn bar(fraction: f64, width: usize) -> String {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (fraction * width as f64).round() as usize;
    // Anything at all shows as at least one cell.
    let full = if fraction > 0.0 { full.max(1) } else { 0 };
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize it is given and reads nothing else.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        (libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0)
            .then_some(usize::from(size.ws_col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_to_their_fraction_and_show_any_amount() {
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(0.0, 3), "░░░");
        assert_eq!(bar(0.01, 3), "█░░");
        assert_eq!(bar(7.0, 2), "██");
        assert_eq!(bar(f64::NAN, 2), "░░");
    }

    #[test]
    fn colour_only_when_asked() {
        let plain = Style {
            width: 80,
            colour: false,
        };
        assert_eq!(plain.paint(Tone::Bad, "x"), "x");
        let coloured = Style {
            width: 80,
            colour: true,
        };
        assert_eq!(coloured.paint(Tone::Bad, "x"), "\x1b[31mx\x1b[0m");
    }
}
