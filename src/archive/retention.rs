//! Which builds retention lets go: a build is deleted only when it is both older than
//! `keep_days` and not among the `keep_last` newest; release builds are pinned.

use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: u64,
    pub keep_days: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            keep_last: 30,
            keep_days: 30,
        }
    }
}

/// What retention needs to know of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub build: u64,
    pub created_at: Timestamp,
    pub release: bool,
}

/// A build retention lets go, and the rule that lets it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub build: u64,
    pub rule: String,
}

/// The builds to delete at `now`. "Newest" is by build number, which never goes backwards;
/// a clock set backwards only makes builds look younger, so it can keep but never delete.
pub fn expired(
    builds: &[Candidate],
    policy: Policy,
    now: Timestamp,
    include_releases: bool,
) -> Vec<Expired> {
    let mut newest_first: Vec<&Candidate> = builds.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse(b.build));
    let limit_ns = i128::from(policy.keep_days) * 86_400 * 1_000_000_000;
    let mut out = Vec::new();
    for (rank, build) in newest_first.into_iter().enumerate() {
        let age_ns = now.as_nanosecond() - build.created_at.as_nanosecond();
        let old = age_ns > limit_ns;
        // The newest build always stays, whatever `keep_last` says: an archive step must never
        // delete the build it has just made.
        let beyond = rank as u64 >= policy.keep_last.max(1);
        if old && beyond && (include_releases || !build.release) {
            out.push(Expired {
                build: build.build,
                rule: format!(
                    "{} days old (keep_days: {}) and number {} from the newest (keep_last: {})",
                    age_ns / (86_400 * 1_000_000_000),
                    policy.keep_days,
                    rank + 1,
                    policy.keep_last
                ),
            });
        }
    }
    out.sort_by_key(|e| e.build);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    /// Builds numbered from 1, `every` seconds apart, the last one made `now`.
    fn series(count: u64, every: i64) -> Vec<Candidate> {
        (1..=count)
            .map(|n| Candidate {
                build: n,
                created_at: Timestamp::from_second(now().as_second() - (count - n) as i64 * every)
                    .unwrap(),
                release: false,
            })
            .collect()
    }

    fn expired_numbers(builds: &[Candidate]) -> Vec<u64> {
        expired(builds, Policy::default(), now(), false)
            .into_iter()
            .map(|e| e.build)
            .collect()
    }

    #[test]
    fn twice_a_day_for_30_days_keeps_60() {
        assert!(expired_numbers(&series(60, DAY / 2)).is_empty());
    }

    #[test]
    fn every_other_day_for_60_days_keeps_the_last_30() {
        let builds = series(30, 2 * DAY);
        assert!(expired_numbers(&builds).is_empty(), "30 builds: all kept");
        let builds = series(31, 2 * DAY);
        assert_eq!(
            expired_numbers(&builds),
            [1],
            "the 31st newest, 60 days old"
        );
        // 15 of the 30 kept are older than 30 days.
        let kept_old = builds[1..]
            .iter()
            .filter(|b| now().as_second() - b.created_at.as_second() > 30 * DAY)
            .count();
        assert_eq!(kept_old, 14);
    }

    #[test]
    fn exactly_30_days_old_is_not_older_than_30_days() {
        let mut builds = series(31, 0);
        builds[0].created_at = Timestamp::from_second(now().as_second() - 30 * DAY).unwrap();
        assert!(expired_numbers(&builds).is_empty());
        builds[0].created_at = Timestamp::from_second(now().as_second() - 30 * DAY - 1).unwrap();
        assert_eq!(expired_numbers(&builds), [1]);
    }

    #[test]
    fn thirty_one_builds_in_one_day_are_all_kept() {
        assert!(expired_numbers(&series(31, 60)).is_empty());
    }

    #[test]
    fn five_builds_over_90_days_are_all_kept() {
        assert!(expired_numbers(&series(5, 22 * DAY)).is_empty());
    }

    #[test]
    fn a_release_is_pinned_unless_included() {
        let mut builds = series(40, 2 * DAY);
        builds[2].release = true;
        let expired_now = expired_numbers(&builds);
        assert_eq!(expired_now, [1, 2, 4, 5, 6, 7, 8, 9, 10]);
        let all = expired(&builds, Policy::default(), now(), true);
        assert!(all.iter().any(|e| e.build == 3), "{all:?}");
        assert!(all[0].rule.contains("keep_last: 30"), "{}", all[0].rule);
    }

    #[test]
    fn a_clock_set_backwards_deletes_nothing_new() {
        // The newest builds were made "in the future"; the old ones still age normally.
        let mut builds = series(35, 2 * DAY);
        for b in builds.iter_mut().skip(30) {
            b.created_at = Timestamp::from_second(now().as_second() + 5 * DAY).unwrap();
        }
        assert_eq!(expired_numbers(&builds), [1, 2, 3, 4, 5]);
        let past = Timestamp::from_second(now().as_second() - 365 * DAY).unwrap();
        assert!(expired(&builds, Policy::default(), past, false).is_empty());
    }
}
