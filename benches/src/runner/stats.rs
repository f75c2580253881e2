//! Medians, and medians of per-repetition ratios.

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// The median over repetitions of `value / baseline` in the same repetition, using only the
/// repetitions where both exist and the baseline is positive.
pub(crate) fn median_ratio(values: &[Option<f64>], baseline: &[Option<f64>]) -> Option<f64> {
    let ratios = values
        .iter()
        .zip(baseline)
        .filter_map(|pair| match pair {
            (Some(value), Some(base)) if *base > 0.0 => Some(value / base),
            _ => None,
        })
        .collect();
    median(ratios)
}

#[cfg(test)]
mod tests {
    use super::{median, median_ratio};

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_pair_repetitions() {
        let ours = [Some(2.0), None, Some(9.0), Some(3.0)];
        let base = [Some(1.0), Some(5.0), Some(3.0), Some(0.0)];
        // Pairs: 2/1 and 9/3; the missing and the zero baseline are skipped.
        assert_eq!(median_ratio(&ours, &base), Some(2.5));
    }
}
