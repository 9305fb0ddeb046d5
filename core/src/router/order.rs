//! The order in which a request tries the upstreams.
//!
//! 1. Candidates: upstreams serving the model that are not ejected, not open-circuited and not
//!    marked down by probes.
//! 2. First: the client's pinned upstream (`x-gateway-region`), else the one nearest the client
//!    (great-circle distance). Among equally near ones (the same region, or within
//!    [`SAME_PLACE_KM`]; or all of them when nothing is known of the client's place): the power
//!    of two choices over [`Upstreams::score`] (latency average x load / weight).
//! 3. Then the first choice's `fallbacks`, in order; then the other candidates by score.
//! 4. A pinned or nearest upstream that is not a candidate is skipped, but its fallbacks still
//!    come first: the order is as if the client stood where it is.
//! 5. With no candidate at all, the upstreams that become available soonest (ejection or
//!    breaker cooldown end) are tried, rather than refusing; those marked down by probes last.

use crate::config::UpstreamSettings;
use crate::routing::geo::distance_km;
use crate::time::Instant;

use super::upstreams::{Availability, Upstreams};

/// Upstreams this close to the nearest one count as equally near.
pub const SAME_PLACE_KM: f64 = 100.0;

/// What the order depends on, besides the upstreams' state.
#[derive(Debug, Clone, Copy)]
pub struct OrderRequest<'a> {
    pub model: &'a str,
    /// The client's (latitude, longitude), if known.
    pub client: Option<(f64, f64)>,
    /// `x-gateway-region`: an upstream's name or region.
    pub pin: Option<&'a str>,
    pub now: Instant,
    /// From the runtime's RNG, for the power of two choices.
    pub random: u64,
}

pub(crate) fn order(
    upstreams: &[UpstreamSettings],
    states: &Upstreams,
    req: &OrderRequest<'_>,
) -> Vec<usize> {
    let serving: Vec<usize> = upstreams
        .iter()
        .enumerate()
        .filter(|(_, u)| u.serves(req.model))
        .map(|(i, _)| i)
        .collect();
    let best = states.best_latency();
    let score = |i: usize| {
        let w = upstreams.get(i).map_or(1, |u| u.weight);
        states.score(i, w, best)
    };
    let available: Vec<usize> = serving
        .iter()
        .copied()
        .filter(|&i| states.availability(i, req.now) == Availability::Available)
        .collect();
    if available.is_empty() {
        return soonest_first(&serving, states, req.now, &score);
    }
    let is_available = |i: usize| available.contains(&i);
    let mut random = req.random;

    // The upstream whose place and fallbacks lead the order, and whether it is itself first.
    let mut first: Option<usize> = None;
    let mut anchor: Option<usize> = None;
    let pinned: Vec<usize> = req
        .pin
        .map(|p| {
            serving
                .iter()
                .copied()
                .filter(|&i| {
                    upstreams.get(i).is_some_and(|u| {
                        u.name.eq_ignore_ascii_case(p) || u.region.eq_ignore_ascii_case(p)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if !pinned.is_empty() {
        let open: Vec<usize> = pinned
            .iter()
            .copied()
            .filter(|&i| is_available(i))
            .collect();
        match two_choices(&open, &mut random, &score) {
            Some(i) => first = Some(i),
            None => anchor = pinned.first().copied(),
        }
    }
    if first.is_none() && anchor.is_none() {
        match nearest(upstreams, &serving, req.client) {
            Some(group) => {
                let open: Vec<usize> = group.iter().copied().filter(|&i| is_available(i)).collect();
                match two_choices(&open, &mut random, &score) {
                    Some(i) => first = Some(i),
                    None => anchor = group.first().copied(),
                }
            }
            None => first = two_choices(&available, &mut random, &score),
        }
    }

    let mut out = Vec::with_capacity(available.len());
    if let Some(f) = first {
        out.push(f);
    }
    if let Some(lead) = first.or(anchor).and_then(|i| upstreams.get(i)) {
        for &f in &lead.fallbacks {
            if is_available(f) && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    let mut rest: Vec<(f64, usize)> = available
        .iter()
        .copied()
        .filter(|i| !out.contains(i))
        .map(|i| (score(i), i))
        .collect();
    sort_ranked(&mut rest);
    out.extend(rest.into_iter().map(|(_, i)| i));
    out
}

/// The serving upstreams nearest the client: the nearest one first, then those in its region or
/// within [`SAME_PLACE_KM`] of its distance. `None` when the client's place or every upstream's
/// is unknown.
fn nearest(
    upstreams: &[UpstreamSettings],
    serving: &[usize],
    client: Option<(f64, f64)>,
) -> Option<Vec<usize>> {
    let client = client?;
    let mut placed: Vec<(f64, usize)> = serving
        .iter()
        .filter_map(|&i| {
            let u = upstreams.get(i)?;
            Some((distance_km(client, u.location?), i))
        })
        .collect();
    sort_ranked(&mut placed);
    let &(d0, i0) = placed.first()?;
    let region = upstreams.get(i0).map(|u| u.region.as_str());
    Some(
        placed
            .iter()
            .filter(|(d, i)| {
                *d <= d0 + SAME_PLACE_KM || upstreams.get(*i).map(|u| u.region.as_str()) == region
            })
            .map(|&(_, i)| i)
            .collect(),
    )
}

/// The power of two choices: two of `group` at random, the better scored wins. Avoids both
/// herding on one "best" upstream and the cost of ranking them all.
fn two_choices(group: &[usize], random: &mut u64, score: &dyn Fn(usize) -> f64) -> Option<usize> {
    match group.len() {
        0 => None,
        1 => group.first().copied(),
        n => {
            let a = (*random % n as u64) as usize;
            let b = ((*random >> 32) % (n as u64 - 1)) as usize;
            // Distinct from `a`.
            let b = if b >= a { b + 1 } else { b };
            *random = random.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
            let (a, b) = (group.get(a).copied()?, group.get(b).copied()?);
            Some(if score(b) < score(a) { b } else { a })
        }
    }
}

fn soonest_first(
    serving: &[usize],
    states: &Upstreams,
    now: Instant,
    score: &dyn Fn(usize) -> f64,
) -> Vec<usize> {
    let mut later: Vec<(f64, usize)> = Vec::new();
    let mut down: Vec<(f64, usize)> = Vec::new();
    for &i in serving {
        match states.availability(i, now) {
            Availability::Available => later.push((0.0, i)),
            Availability::Later(t) => later.push((t.since(now).as_secs_f64(), i)),
            Availability::Down => down.push((score(i), i)),
        }
    }
    sort_ranked(&mut later);
    sort_ranked(&mut down);
    later
        .into_iter()
        .map(|(_, i)| i)
        .chain(down.into_iter().map(|(_, i)| i))
        .collect()
}

/// Sorts by rank, then index. One sort for every list, and an insertion sort: the lists hold a
/// handful of upstreams, and the standard library's sort would add its code (over 10 KB) to
/// the Worker for them.
fn sort_ranked(list: &mut [(f64, usize)]) {
    let before =
        |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).is_lt();
    for i in 1..list.len() {
        let mut j = i;
        while j > 0 && matches!((list.get(j - 1), list.get(j)), (Some(a), Some(b)) if before(b, a))
        {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sort_ranked;

    #[test]
    fn ranked_lists_sort_as_the_standard_sort_would() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..24 {
            let mut list: Vec<(f64, usize)> = (0..len)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Few distinct ranks, so ties on the rank are common.
                    ((seed % 5) as f64 * 0.5, (seed >> 8) as usize % 7 + i * 7)
                })
                .collect();
            if len == 3 {
                list.push((f64::INFINITY, 0));
                list.push((-0.0, 1));
            }
            let mut expected = list.clone();
            expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            sort_ranked(&mut list);
            assert_eq!(list, expected);
        }
    }
}
