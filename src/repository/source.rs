//! Which configuration a model directory has, and reading it: Sluice's
//! `config.toml`, Triton's `config.pbtxt`, or neither (everything is then
//! derived from the graph, unless strict model configuration forbids it).

use super::config::ModelConfig;
use super::pbtxt;
use std::path::Path;

/// The file name of Sluice's own format.
pub(crate) const TOML_FILE: &str = "config.toml";

/// Reads the configuration of the model `name` in `dir`. A directory with
/// both files is an error; so, with `strict` (Triton's
/// `--strict-model-config`), is one with neither.
pub(crate) fn load_config(dir: &Path, name: &str, strict: bool) -> Result<ModelConfig, String> {
    let toml_path = dir.join(TOML_FILE);
    let pbtxt_path = dir.join(pbtxt::FILE_NAME);
    match (read(&toml_path)?, read(&pbtxt_path)?) {
        (Some(_), Some(_)) => Err(format!(
            "{}: has both {TOML_FILE} and {}; keep one of them",
            dir.display(),
            pbtxt::FILE_NAME
        )),
        (Some(text), None) => ModelConfig::parse(&toml_path, &text),
        (None, Some(text)) => {
            let context = pbtxt::Context { dir, name, strict };
            pbtxt::parse(&pbtxt_path, &text, &context)
        }
        (None, None) if strict => Err(format!(
            "{}: no {} (strict model configuration: a missing configuration is not derived from the model)",
            dir.display(),
            pbtxt::FILE_NAME
        )),
        (None, None) => Ok(ModelConfig::from_graph()),
    }
}

fn read(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}
