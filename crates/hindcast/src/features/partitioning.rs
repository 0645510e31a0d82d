//! How a feature view's hive partitions follow its event time, so that a join can skip the
//! partitions its spine cannot reach (the filter itself is built by the physical planner).

/// How a feature view's hive partitions derive from its event time (UTC). Only views opt
/// in: `DESCRIBE` shows it, and `docs/features.md` states the convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePartitioning {
    /// One column holding the event's date: `date=2025-01-15/` (a string or a `DATE`).
    Date(String),
    /// `year=2025/month=1/day=15/[hour=7/]`, coarsest first: a prefix of year, month, day,
    /// hour.
    Calendar(Vec<String>),
}

impl TimePartitioning {
    /// Recognise the time-derived columns among a view's partition columns.
    pub fn detect(partitions: &[String]) -> Option<Self> {
        let has = |name: &str| partitions.iter().any(|p| p.eq_ignore_ascii_case(name));
        if let Some(date) = partitions
            .iter()
            .find(|p| p.eq_ignore_ascii_case("date") || p.eq_ignore_ascii_case("dt"))
        {
            return Some(Self::Date(date.clone()));
        }
        let chain: Vec<String> = ["year", "month", "day", "hour"]
            .into_iter()
            .take_while(|name| has(name))
            .map(|name| {
                partitions
                    .iter()
                    .find(|p| p.eq_ignore_ascii_case(name))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        (!chain.is_empty()).then_some(Self::Calendar(chain))
    }

    pub fn columns(&self) -> Vec<&str> {
        match self {
            Self::Date(name) => vec![name],
            Self::Calendar(names) => names.iter().map(String::as_str).collect(),
        }
    }
}
