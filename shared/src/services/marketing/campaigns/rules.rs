//! The rules of a campaign that need no database: which status allows which action, how an
//! A/B test splits an audience and picks its winner, how recipients are numbered into batches,
//! and how a finished campaign ends.
use super::{CampaignStatus, LETTERS};
use crate::domain::DomainError;

/// Recipients per batch when the caller does not say.
pub const DEFAULT_BATCH_SIZE: u32 = 500;
/// The most recipients one provider call takes (SendGrid personalizations, Mailgun
/// recipient-variables: 1,000 each).
pub const MAX_BATCH_SIZE: u32 = 1000;

/// What is asked of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Edit,
    Schedule,
    Start,
    Pause,
    Resume,
    Cancel,
    Delete,
}

/// Whether `action` is allowed in `status`; otherwise the 409 that names the status (an edit
/// while sending has its own code, `campaign-sending`).
pub fn allow(status: CampaignStatus, action: Action) -> Result<(), DomainError> {
    use CampaignStatus::*;
    let (allowed, what): (&[CampaignStatus], &str) = match action {
        Action::Edit => (&[Draft, Scheduled], "edited"),
        Action::Schedule => (&[Draft, Scheduled], "scheduled"),
        Action::Start => (&[Draft, Scheduled], "started"),
        Action::Pause => (&[Scheduled, Sending], "paused"),
        Action::Resume => (&[Paused], "resumed"),
        Action::Cancel => (&[Scheduled, Sending, Paused], "cancelled"),
        Action::Delete => (&[Draft, Cancelled, Sent, Failed], "deleted"),
    };
    if allowed.contains(&status) {
        return Ok(());
    }
    if action == Action::Edit && status == Sending {
        return Err(DomainError::conflict(
            "campaign-sending",
            "the campaign is sending: it cannot be edited (pause or cancel it first)",
        ));
    }
    let from: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    Err(DomainError::conflict(
        "illegal-transition",
        format!(
            "the campaign is {status}: only a {} campaign can be {what}",
            from.join(" or ")
        ),
    ))
}

/// Where a paused campaign goes back to: sending when it had started, else scheduled (the
/// scheduler starts it when its time has come, at once if it has passed).
pub fn resumed(started: bool) -> CampaignStatus {
    if started {
        CampaignStatus::Sending
    } else {
        CampaignStatus::Scheduled
    }
}

/// The recipients per batch: `requested`, or the default; 1 to 1,000.
pub fn batch_size(requested: Option<u32>) -> Result<i32, DomainError> {
    let n = requested.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_SIZE).contains(&n) {
        return Err(DomainError::invalid(
            "batch_size",
            "out_of_range",
            format!("must be 1 to {MAX_BATCH_SIZE}"),
        ));
    }
    i32::try_from(n).map_err(|e| DomainError::Internal(e.into()))
}

/// How an A/B test divides a sendable audience of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Recipients of each variant.
    pub per_variant: i64,
    /// Held back for the winner.
    pub held: i64,
}

/// The test share (`share` of `total`, read to a hundredth of a percent so that 0.29 of 100 is
/// 29, not 28) is split evenly across the variants; the remainder is held for the winner. Each
/// variant gets at least one recipient when there are enough for all.
pub fn ab_split(total: i64, share: f64, variants: usize) -> Split {
    let variants = i64::try_from(variants.max(1)).unwrap_or(1);
    let total = total.max(0);
    // `share` is checked to 0.05..=0.5 when the campaign is saved; the cast cannot overflow.
    let basis_points = (share * 10_000.0).round() as i64;
    let tested = total.saturating_mul(basis_points.clamp(0, 10_000)) / 10_000;
    let mut per_variant = tested / variants;
    if per_variant == 0 && total >= variants {
        per_variant = 1;
    }
    Split {
        per_variant,
        held: total - per_variant * variants,
    }
}

/// The variant with the most unique opens (or clicks); a tie goes to the earlier letter. No
/// variant (an audience too small to test): `a`.
pub fn winner(counts: &[(String, i64)]) -> String {
    let mut best: Option<&(String, i64)> = None;
    for c in counts {
        match best {
            Some(b) if c.1 < b.1 || (c.1 == b.1 && c.0 >= b.0) => {}
            _ => best = Some(c),
        }
    }
    best.map_or_else(|| LETTERS[0].to_owned(), |b| b.0.clone())
}

/// How the sendable recipients, numbered 0..n in a random order, fall into groups (variants)
/// and batches: recipient `n` is in group `g` (1-based) when `starts[g-1] <= n < starts[g]`
/// (Postgres' `width_bucket(n, starts)`); past the last start it is held (no variant, no
/// batch). Its batch is `seq_base[g-1] + (n - starts[g-1]) / batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    pub labels: Vec<Option<String>>,
    pub starts: Vec<i32>,
    pub seq_base: Vec<i32>,
}

/// The groups of a campaign without a test (everyone in one group, however many there turn
/// out to be), or of an A/B test of `variants` with `per_variant` recipients each.
pub fn groups(ab: Option<(usize, i64)>, batch: i32) -> Groups {
    match ab {
        None => Groups {
            labels: vec![None],
            starts: vec![0, i32::MAX],
            seq_base: vec![0],
        },
        Some((variants, per_variant)) => {
            let per = i32::try_from(per_variant).unwrap_or(i32::MAX);
            let batches_each = if per == 0 { 0 } else { (per + batch - 1) / batch.max(1) };
            let n = i32::try_from(variants).unwrap_or(0);
            Groups {
                labels: LETTERS.iter().take(variants).map(|l| Some((*l).to_owned())).collect(),
                starts: (0..=n).map(|i| i.saturating_mul(per)).collect(),
                seq_base: (0..n).map(|i| i * batches_each).collect(),
            }
        }
    }
}

/// How a campaign whose every batch is done ends: sent when any batch was accepted (or none
/// failed: everyone was suppressed since the freeze), failed when every batch that went out
/// was refused.
pub fn finished(accepted: i64, failed: i64) -> (CampaignStatus, Option<&'static str>) {
    if accepted > 0 || failed == 0 {
        (CampaignStatus::Sent, None)
    } else {
        (
            CampaignStatus::Failed,
            Some("the provider refused every batch: see the recipients' errors"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<(), DomainError>) -> (&'static str, String) {
        match result {
            Err(DomainError::Conflict { code, detail, .. }) => (code, detail),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn each_action_is_allowed_only_from_its_statuses() {
        use CampaignStatus::*;
        let all = [Draft, Scheduled, Sending, Paused, Sent, Cancelled, Failed];
        let table: [(Action, &[CampaignStatus]); 7] = [
            (Action::Edit, &[Draft, Scheduled]),
            (Action::Schedule, &[Draft, Scheduled]),
            (Action::Start, &[Draft, Scheduled]),
            (Action::Pause, &[Scheduled, Sending]),
            (Action::Resume, &[Paused]),
            (Action::Cancel, &[Scheduled, Sending, Paused]),
            (Action::Delete, &[Draft, Cancelled, Sent, Failed]),
        ];
        for (action, allowed) in table {
            for status in all {
                let result = allow(status, action);
                assert_eq!(result.is_ok(), allowed.contains(&status), "{action:?} from {status}");
                if result.is_err() {
                    let (_, detail) = code(result);
                    assert!(detail.contains(&format!("is {status}")), "{detail}");
                }
            }
        }
    }

    #[test]
    fn an_edit_while_sending_has_its_own_code() {
        assert_eq!(code(allow(CampaignStatus::Sending, Action::Edit)).0, "campaign-sending");
        assert_eq!(code(allow(CampaignStatus::Sent, Action::Edit)).0, "illegal-transition");
        assert_eq!(
            code(allow(CampaignStatus::Sending, Action::Delete)).0,
            "illegal-transition"
        );
    }

    #[test]
    fn a_test_share_is_split_evenly_and_the_rest_held() {
        // Given 1,000 recipients, 20% tested over two variants
        assert_eq!(
            ab_split(1000, 0.2, 2),
            Split {
                per_variant: 100,
                held: 800
            }
        );
        // A share that floats badly is read to the basis point: 29% of 100 is 29
        assert_eq!(ab_split(100, 0.29, 1).per_variant, 29);
        // An uneven test share: the odd one is held
        assert_eq!(
            ab_split(101, 0.05, 3),
            Split {
                per_variant: 1,
                held: 98
            }
        );
        // Too few for the share: one each while there are enough
        assert_eq!(
            ab_split(10, 0.05, 2),
            Split {
                per_variant: 1,
                held: 8
            }
        );
        assert_eq!(
            ab_split(1, 0.5, 2),
            Split {
                per_variant: 0,
                held: 1
            }
        );
    }

    #[test]
    fn the_winner_has_the_most_and_ties_go_to_the_earlier_letter() {
        let c = |v: &[(&str, i64)]| v.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect::<Vec<_>>();
        assert_eq!(winner(&c(&[("a", 3), ("b", 5), ("c", 4)])), "b");
        assert_eq!(winner(&c(&[("b", 5), ("a", 5)])), "a");
        assert_eq!(winner(&c(&[("a", 0), ("b", 0)])), "a");
        assert_eq!(winner(&[]), "a");
    }

    #[test]
    fn groups_number_batches_per_variant() {
        // Without a test: one group, every recipient in it, batches from 0
        let g = groups(None, 500);
        assert_eq!(
            (g.labels, g.starts, g.seq_base),
            (vec![None], vec![0, i32::MAX], vec![0])
        );
        // Two variants of 1,200 in batches of 500: three batches each, b's from seq 3
        let g = groups(Some((2, 1200)), 500);
        assert_eq!(g.labels, [Some("a".to_owned()), Some("b".to_owned())]);
        assert_eq!(g.starts, [0, 1200, 2400]);
        assert_eq!(g.seq_base, [0, 3]);
        // Variants too small to have anyone: no batches
        assert_eq!(groups(Some((2, 0)), 500).seq_base, [0, 0]);
    }

    #[test]
    fn batch_sizes_are_one_to_a_thousand() {
        assert_eq!(batch_size(None).unwrap(), 500);
        assert_eq!(batch_size(Some(1000)).unwrap(), 1000);
        assert!(batch_size(Some(0)).is_err());
        assert!(batch_size(Some(1001)).is_err());
    }

    #[test]
    fn a_campaign_ends_sent_unless_every_batch_was_refused() {
        assert_eq!(finished(3, 1).0, CampaignStatus::Sent);
        assert_eq!(finished(0, 0).0, CampaignStatus::Sent);
        assert_eq!(finished(0, 2).0, CampaignStatus::Failed);
    }
}
