//! Sticky A/B assignment: a user id always lands on the same arm until the arms change.

use xxhash_rust::xxh3::Xxh3;

use super::tiers::ArmSpec;

/// The arm index for `user_id`. The hash covers the split's name and arms, so changing
/// the split reshuffles users once; an empty user id gets a random arm.
pub(super) fn choose(split: &str, arms: &[ArmSpec], user_id: &str) -> usize {
    let total: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
    if arms.len() <= 1 || total == 0 {
        return 0;
    }
    let point = if user_id.is_empty() {
        rand::random::<u64>() % total
    } else {
        let mut h = Xxh3::new();
        h.update(split.as_bytes());
        for arm in arms {
            h.update(&[0]);
            h.update(arm.tier.as_bytes());
            h.update(&arm.weight.to_le_bytes());
        }
        h.update(&[1]);
        h.update(user_id.as_bytes());
        h.digest() % total
    };
    let mut acc = 0;
    for (i, arm) in arms.iter().enumerate() {
        acc += u64::from(arm.weight);
        if point < acc {
            return i;
        }
    }
    arms.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(a: u32, b: u32) -> Vec<ArmSpec> {
        vec![
            ArmSpec {
                tier: "fast".into(),
                weight: a,
            },
            ArmSpec {
                tier: "pro".into(),
                weight: b,
            },
        ]
    }

    #[test]
    fn ten_thousand_users_are_sticky_and_split_within_two_percent() {
        for (a, b) in [(50, 50), (90, 10), (1, 3)] {
            let arms = arms(a, b);
            let mut first = 0u32;
            for u in 0..10_000 {
                let user = format!("user-{u}");
                let arm = choose("auto", &arms, &user);
                for _ in 0..3 {
                    assert_eq!(choose("auto", &arms, &user), arm, "sticky");
                }
                if arm == 0 {
                    first += 1;
                }
            }
            let share = f64::from(first) / 10_000.0;
            let target = f64::from(a) / f64::from(a + b);
            assert!(
                (share - target).abs() < 0.02,
                "{a}/{b}: {share} vs {target}"
            );
        }
    }

    #[test]
    fn changing_the_split_reshuffles() {
        let moved = (0..1000)
            .filter(|u| {
                let user = format!("u{u}");
                choose("auto", &arms(50, 50), &user) != choose("auto", &arms(60, 40), &user)
            })
            .count();
        assert!(moved > 100, "{moved}");
    }
}
