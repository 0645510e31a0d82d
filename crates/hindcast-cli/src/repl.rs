//! The interactive shell: line editing with persistent history, statements over several
//! lines (ended by `;`), tab completion of keywords and names, `\\` meta-commands, and
//! `Ctrl-C` that cancels the running query without leaving the shell.
//!
//! Laid out as datafusion-cli is: [`crate::exec`] runs statements, [`crate::command`] the
//! meta-commands, [`crate::helper`] is the line editor's helper, [`crate::error`] formats
//! errors.

use std::path::PathBuf;

use datafusion::common::{DataFusionError, Result};
use hindcast::Hindcast;
use rustyline::Editor;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;

use crate::command::{Flow, meta};
use crate::error::caret;
use crate::exec::run_cancellable;
use crate::helper::{ShellHelper, names};
use crate::input::without_leading_comments;
use crate::print::Printer;

pub async fn run(hc: &Hindcast, printer: &mut Printer) -> Result<()> {
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::new().map_err(|e| DataFusionError::External(Box::new(e)))?;
    editor.set_helper(Some(ShellHelper {
        names: names(hc).await,
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the first run, not an error.
        let _ = editor.load_history(path);
    }
    println!(
        "hindcast {}: type SQL ending with ';', \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut interrupted = false;
    loop {
        match editor.readline("hindcast> ") {
            Ok(line) => {
                interrupted = false;
                let text = without_leading_comments(&line);
                if text.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(text);
                let flow = if let Some(command) = text.strip_prefix('\\') {
                    meta(hc, printer, command).await
                } else {
                    run_cancellable(hc, printer, text)
                        .await
                        .map(|()| Flow::Continue)
                };
                match flow {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Continue) => {}
                    Err(e) => {
                        eprintln!("Error: {}", hindcast::error_message(&e));
                        if let Some(pointer) = caret(text, &e) {
                            eprintln!("{pointer}");
                        }
                    }
                }
                // DDL may have added or dropped names.
                if let Some(helper) = editor.helper_mut() {
                    helper.names = names(hc).await;
                }
            }
            Err(ReadlineError::Interrupted) => {
                if interrupted {
                    break;
                }
                interrupted = true;
                eprintln!("(Ctrl-C again at an empty prompt, Ctrl-D or \\q to quit)");
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// `$XDG_DATA_HOME/hindcast/history`, else `~/.local/share/hindcast/history`: the user's
/// data directory, not the working directory.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("hindcast").join("history"))
}
