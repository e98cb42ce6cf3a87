//! Work cut into chunks, each on a thread of its own.

/// Runs `work` on `items` cut into at most `threads` chunks of consecutive items, each on a
/// new scoped thread (never the calling one: `work` may enter a namespace, and a thread that
/// ends leaves it behind), and returns each chunk's result in the order of the items. A
/// panic in a chunk is resumed here.
pub fn in_chunks<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let work = &work;
        let running: Vec<_> = items
            .chunks(chunk)
            .map(|items| s.spawn(move || work(items)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::in_chunks;

    #[test]
    fn chunks_come_back_in_the_order_of_the_items() {
        let items: Vec<u32> = (0..10).collect();
        let chunks = in_chunks(&items, 3, <[u32]>::to_vec);
        assert_eq!(chunks, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert!(in_chunks(&[] as &[u32], 4, <[u32]>::len).is_empty());
        assert_eq!(in_chunks(&items, 0, <[u32]>::len), [10], "no threads: one");
    }
}
