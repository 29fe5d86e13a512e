//! `--generation [DATASET=]ID`: one generation id for every dataset, or for one named dataset
//! (a manual-schedule dataset beside a daily one must not start a non-date generation of it).

use std::collections::BTreeMap;
use std::str::FromStr;

use super::Rollout;

/// One `--generation` value: `ID` (every dataset) or `DATASET=ID` (that dataset only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationArg {
    pub dataset: Option<String>,
    pub id: String,
}

impl FromStr for GenerationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            None => Ok(GenerationArg {
                dataset: None,
                id: s.to_string(),
            }),
            Some((dataset, id)) if !dataset.is_empty() && !id.is_empty() => Ok(GenerationArg {
                dataset: Some(dataset.to_string()),
                id: id.to_string(),
            }),
            Some(_) => Err("expected ID, or DATASET=ID for one dataset".to_string()),
        }
    }
}

/// The generation ids a run was given: one for every dataset and some for named ones (which
/// win for their dataset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationIds {
    /// A plain `--generation ID`.
    pub all: Option<String>,
    /// `--generation DATASET=ID`, by dataset.
    pub by_dataset: BTreeMap<String, String>,
}

impl GenerationIds {
    /// One id for every dataset.
    pub fn all(id: &str) -> GenerationIds {
        GenerationIds {
            all: Some(id.to_string()),
            by_dataset: BTreeMap::new(),
        }
    }

    /// Collects repeated `--generation` values; a second plain id, or a dataset named twice,
    /// is ambiguous and refused.
    pub fn from_args(args: &[GenerationArg]) -> Result<GenerationIds, String> {
        let mut ids = GenerationIds::default();
        for a in args {
            let previous = match &a.dataset {
                None => ids.all.replace(a.id.clone()),
                Some(d) => ids.by_dataset.insert(d.clone(), a.id.clone()),
            };
            if let Some(p) = previous {
                return Err(match &a.dataset {
                    None => format!(
                        "--generation is given twice for every dataset (`{p}`, `{}`); name one dataset with --generation DATASET=ID",
                        a.id
                    ),
                    Some(d) => {
                        format!("--generation names dataset `{d}` twice (`{p}`, `{}`)", a.id)
                    }
                });
            }
        }
        Ok(ids)
    }

    /// The id a dataset was given, if any.
    pub fn get(&self, dataset: &str) -> Option<&String> {
        self.by_dataset.get(dataset).or(self.all.as_ref())
    }

    /// Every id given, each once.
    pub fn ids(&self) -> Vec<&String> {
        let mut ids: Vec<&String> = self.all.iter().chain(self.by_dataset.values()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Refuses a `DATASET=ID` whose dataset the spec does not have, naming the ones it has.
    pub fn check(&self, rollout: &Rollout) -> Result<(), String> {
        let known: Vec<&str> = rollout
            .spec
            .datasets
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        match self
            .by_dataset
            .keys()
            .find(|d| !known.contains(&d.as_str()))
        {
            Some(unknown) => Err(format!(
                "--generation names dataset `{unknown}`, which the spec does not have; its datasets: {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_named_ids() {
        let args: Vec<GenerationArg> = ["v1", "models=v7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ids = GenerationIds::from_args(&args).unwrap();
        assert_eq!(ids.get("data").map(String::as_str), Some("v1"));
        assert_eq!(ids.get("models").map(String::as_str), Some("v7"));
        assert!("=v1".parse::<GenerationArg>().is_err());
        assert!("data=".parse::<GenerationArg>().is_err());
        let twice: Vec<GenerationArg> = ["a", "b"].iter().map(|s| s.parse().unwrap()).collect();
        assert!(GenerationIds::from_args(&twice).is_err());
    }
}
