//! Environment overrides: `HUBD__SECTION__KEY=value` replaces `key` in
//! `[section]`. Values are typed by the default's type, so `HUBD__HUB__NAME=1234`
//! stays a string and `HUBD__STORE__BATCH_MAX=abc` is a precise error.
//! `[[slots]]` cannot be overridden from the environment: slots belong in the file.

use toml::{Table, Value};

use super::{Config, ConfigError};

/// Prefix of every hubd environment override.
pub const ENV_PREFIX: &str = "HUBD__";

/// The process's `HUBD__…` variables. Other variables are never read, so an
/// unrelated variable that is not UTF-8 cannot stop hubd; a `HUBD__` one is a
/// clear error.
pub fn hub_env() -> Result<Vec<(String, String)>, ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        let var = name.to_string_lossy().into_owned();
        let (Some(name), Ok(value)) = (name.to_str(), value.into_string()) else {
            return Err(ConfigError::Env {
                var,
                message: "not valid UTF-8".into(),
            });
        };
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

/// One `HUBD__…` variable, split into its path.
#[derive(Debug)]
pub(super) struct Override {
    var: String,
    path: Vec<String>,
    value: String,
}

/// The `HUBD__…` variables among `vars`, in a stable order.
pub(super) fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            let path = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            Some(Override { var, path, value })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// Applies `overrides` on top of the file `text` (already known to be valid).
pub(super) fn apply(text: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Env {
            var: "(config file)".into(),
            message: e.message().to_owned(),
        })?;
    let defaults = Table::try_from(Config::default()).map_err(|e| ConfigError::Env {
        var: "(defaults)".into(),
        message: e.to_string(),
    })?;
    for o in overrides {
        let err = |message: String| ConfigError::Env {
            var: o.var.clone(),
            message,
        };
        let [section, key] = o.path.as_slice() else {
            return Err(err(format!(
                "expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}API__LISTEN"
            )));
        };
        if section == "slots" {
            return Err(err(
                "[[slots]] cannot be set from the environment; put slots in the config file".into(),
            ));
        }
        let Some(Value::Table(section_defaults)) = defaults.get(section) else {
            let known: Vec<&str> = defaults
                .iter()
                .filter(|(_, v)| v.is_table())
                .map(|(k, _)| k.as_str())
                .collect();
            return Err(err(format!(
                "unknown section `{section}` (known: {})",
                known.join(", ")
            )));
        };
        let Some(default) = section_defaults.get(key) else {
            let known: Vec<&str> = section_defaults.keys().map(String::as_str).collect();
            return Err(err(format!(
                "unknown setting `{section}.{key}` (known in [{section}]: {})",
                known.join(", ")
            )));
        };
        let value = typed(&o.value, default)
            .map_err(|why| err(format!("`{section}.{key}` = {:?}: {why}", o.value)))?;
        let target = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(target) = target else {
            return Err(err(format!(
                "`{section}` in the config file is not a section"
            )));
        };
        target.insert(key.clone(), value);
    }
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let culprit = overrides.iter().find(|o| o.path.join(".") == path);
        let var = culprit
            .map(|o| o.var.clone())
            .unwrap_or_else(|| format!("{ENV_PREFIX}{}", path.replace('.', "__").to_uppercase()));
        let value = culprit
            .map(|o| format!(" = {:?}", o.value))
            .unwrap_or_default();
        ConfigError::Env {
            var,
            message: format!("`{path}`{value}: {}", e.into_inner().message().trim()),
        }
    })
}

/// Re-attributes a validation error to the environment variable that set
/// the offending field, if one did.
pub(super) fn blame(error: ConfigError, overrides: &[Override]) -> ConfigError {
    let ConfigError::Invalid {
        field,
        value,
        why,
        origin,
    } = error
    else {
        return error;
    };
    match overrides.iter().find(|o| o.path.join(".") == field) {
        Some(o) => ConfigError::Env {
            var: o.var.clone(),
            message: format!("`{field}` = {value}: {why}"),
        },
        None => ConfigError::Invalid {
            origin,
            field,
            value,
            why,
        },
    }
}

/// `raw` as a TOML value of the same type as `default`.
fn typed(raw: &str, default: &Value) -> Result<Value, String> {
    match default {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| "expected an integer".to_owned()),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| "expected a number".to_owned()),
        Value::Boolean(_) => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err("expected true or false".to_owned()),
        },
        other => Err(format!(
            "a {} cannot be set from the environment",
            other.type_str()
        )),
    }
}
