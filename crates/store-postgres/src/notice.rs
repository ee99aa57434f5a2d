//! The change notices replicas send each other through PostgreSQL's NOTIFY.
//!
//! A payload is plain text, fields separated by one space, the job id last (so it may hold
//! anything but is never empty):
//!
//! | change                | payload                                  |
//! |-----------------------|------------------------------------------|
//! | [`Change::Job`]       | `<origin> job <last_sequence> <job_id>`  |
//! | [`Change::Released`]  | `<origin> released <job_id>`             |
//! | [`Change::Tiers`]     | `<origin> tiers`                         |
//! | [`Change::Lagged`]    | `<origin> lagged`                        |
//!
//! `origin` names the sending process (a [`crate::PgStore`] and its clones), so that a
//! process skips its own notices. Anything else is refused by [`parse`].

use finetune_core::store::Change;

/// The channel every notice goes through.
pub const CHANNEL: &str = "finetune_changes";

/// The payload telling `change`, sent by `origin`.
pub(crate) fn encode(origin: &str, change: &Change) -> String {
    match change {
        Change::Job {
            job_id,
            last_sequence,
        } => format!("{origin} job {last_sequence} {job_id}"),
        Change::Released { job_id } => format!("{origin} released {job_id}"),
        Change::Tiers => format!("{origin} tiers"),
        Change::Lagged => format!("{origin} lagged"),
    }
}

/// The sender and the change of a payload, or why it is not one [`encode`] makes.
pub(crate) fn parse(payload: &str) -> Result<(&str, Change), String> {
    let (origin, rest) = payload
        .split_once(' ')
        .filter(|(origin, _)| !origin.is_empty())
        .ok_or("no origin")?;
    let (kind, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let job_id = |id: &str| {
        if id.is_empty() {
            Err("no job id".to_owned())
        } else {
            Ok(id.to_owned())
        }
    };
    let change = match (kind, args) {
        ("job", args) => {
            let (sequence, id) = args.split_once(' ').ok_or("no job id")?;
            let last_sequence = sequence
                .parse::<u64>()
                .map_err(|e| format!("sequence {sequence:?}: {e}"))?;
            Change::Job {
                job_id: job_id(id)?,
                last_sequence,
            }
        }
        ("released", id) => Change::Released {
            job_id: job_id(id)?,
        },
        ("tiers", "") if !rest.ends_with(' ') => Change::Tiers,
        ("lagged", "") if !rest.ends_with(' ') => Change::Lagged,
        _ => return Err(format!("unknown notice {rest:?}")),
    };
    Ok((origin, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_reads_back_as_sent() {
        for change in [
            Change::Job {
                job_id: "job-1f".to_owned(),
                last_sequence: 42,
            },
            Change::Job {
                job_id: "job with spaces".to_owned(),
                last_sequence: u64::MAX,
            },
            Change::Released {
                job_id: "job-2".to_owned(),
            },
            Change::Tiers,
            Change::Lagged,
        ] {
            let payload = encode("abc", &change);
            assert_eq!(parse(&payload), Ok(("abc", change)), "{payload}");
        }
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for payload in [
            "",
            "abc",
            " job 1 job-1",
            "abc job",
            "abc job 1",
            "abc job 1 ",
            "abc job -1 job-1",
            "abc job x job-1",
            "abc job  job-1",
            "abc released",
            "abc released ",
            "abc tiers extra",
            "abc tiers ",
            "abc lagged now",
            "abc deleted job-1",
        ] {
            assert!(parse(payload).is_err(), "{payload:?} was accepted");
        }
    }
}
