//! Merging the mirror lists that several rules give for one source into one ordered list, the
//! way the node does it (openshift/runtime-utils' topological sort).
//!
//! Reproducing the node's order, quirks included, matters more than a "nicer" merge: the order
//! decides which registry is contacted first, and the principle of this tool is to pull from
//! where the node would. The node's algorithm, restated:
//!
//! * every list adds the edges `m[0]→m[1]→…→m[last]`, and `m[last]→source` unless the list
//!   names the source itself; repeated edges count once;
//! * Kahn's algorithm runs over those edges with a FIFO queue, seeded with every node that has
//!   no predecessor in byte order; the successors a popped node frees are sorted and appended;
//! * when the queue runs dry while nodes remain (a cycle: the lists disagree), the byte-smallest
//!   unused node is taken next, predecessors or not;
//! * if the source comes out last it is dropped, because it is tried last anyway.
//!
//! So object order and list order never matter, only edges do; independent mirrors come out in
//! byte order, FIFO can interleave lists (vector 17), and after a conflict the source can even
//! come first (vector 18).

use std::collections::{BTreeSet, VecDeque};

/// The merged mirror order for `source`, given every list of mirrors that names it. Each list
/// must hold at least one mirror other than `source` (the caller drops the others, as the node
/// does), so every node of the graph is on some edge.
pub(super) fn merge(source: &str, lists: &[&[String]]) -> Vec<String> {
    // Nodes are numbered in byte order of their names, so that "byte order" below is just
    // numeric order and a BTreeSet of numbers iterates sorted.
    let names: BTreeSet<&str> = lists
        .iter()
        .flat_map(|list| list.iter().map(String::as_str))
        .chain(std::iter::once(source))
        .collect();
    let names: Vec<&str> = names.into_iter().collect();
    let index = |name: &str| {
        names
            .binary_search(&name)
            .expect("every name was collected")
    };

    // `preds` shrinks as nodes are output; `succs` stays whole.
    let mut preds = vec![BTreeSet::new(); names.len()];
    let mut succs = vec![BTreeSet::new(); names.len()];
    let mut add_edge = |from: usize, to: usize| {
        succs[from].insert(to);
        preds[to].insert(from);
    };
    for list in lists {
        for pair in list.windows(2) {
            add_edge(index(&pair[0]), index(&pair[1]));
        }
        if !list.iter().any(|m| m == source)
            && let Some(last) = list.last()
        {
            add_edge(index(last), index(source));
        }
    }

    let mut used = vec![false; names.len()];
    let mut queue: VecDeque<usize> = (0..names.len()).filter(|&n| preds[n].is_empty()).collect();
    // Everything before this index is used, so it finds the smallest unused node in O(1)
    // amortised when a cycle has to be broken.
    let mut smallest_unused = 0;
    let mut order = Vec::with_capacity(names.len());
    loop {
        let node = match queue.pop_front() {
            Some(node) => node,
            None => {
                while smallest_unused < names.len() && used[smallest_unused] {
                    smallest_unused += 1;
                }
                if smallest_unused == names.len() {
                    break;
                }
                smallest_unused
            }
        };
        // A queued node is only ever used by being popped: cycles are broken only when the
        // queue is empty.
        debug_assert!(!used[node], "{} queued twice", names[node]);
        used[node] = true;
        order.push(names[node]);
        // `succs` iterates in byte order, so the freed batch is appended sorted.
        for &next in &succs[node] {
            preds[next].remove(&node);
            // A node used to break a cycle may still have had predecessors left: not again.
            if preds[next].is_empty() && !used[next] {
                queue.push_back(next);
            }
        }
    }

    if order.last() == Some(&source) {
        order.pop();
    }
    order.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "quay.io/x";

    fn run(lists: &[&[&str]]) -> Vec<String> {
        let owned: Vec<Vec<String>> = lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        let borrowed: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        merge(SRC, &borrowed)
    }

    #[test]
    fn overlapping_lists_keep_their_relative_order() {
        // Vector 15 (the API documentation's own example).
        assert_eq!(
            run(&[&["a", "b", "c"], &["c", "d", "e"]]),
            ["a", "b", "c", "d", "e"]
        );
        // Same edges, other object order: same result.
        assert_eq!(
            run(&[&["c", "d", "e"], &["a", "b", "c"]]),
            ["a", "b", "c", "d", "e"]
        );
    }

    #[test]
    fn independent_mirrors_come_out_in_byte_order() {
        // Vectors 16 and 26: not in object order.
        assert_eq!(
            run(&[&["m2.local/x"], &["m1.local/x"]]),
            ["m1.local/x", "m2.local/x"]
        );
        assert_eq!(
            run(&[&["z-idms.local/x"], &["a-icsp.local/x"]]),
            ["a-icsp.local/x", "z-idms.local/x"]
        );
    }

    #[test]
    fn fifo_queue_interleaves_lists() {
        // Vector 17: a depth-first or list-concatenating merge would give a, z, b, c.
        assert_eq!(run(&[&["a", "z"], &["b", "c"]]), ["a", "b", "z", "c"]);
    }

    #[test]
    fn conflicting_orders_break_the_cycle_at_the_smallest_node() {
        // Vector 18: "quay.io/x" < "w…" < "y…" < "z…", so the source is taken first and stays.
        assert_eq!(
            run(&[
                &["z.local/x", "y.local/x"],
                &["y.local/x", "z.local/x", "w.local/x"]
            ]),
            [SRC, "w.local/x", "y.local/x", "z.local/x"]
        );
    }

    #[test]
    fn a_single_list_keeps_its_order() {
        // Vector 19: list order, not byte order.
        assert_eq!(run(&[&["z", "a", "m"]]), ["z", "a", "m"]);
    }

    #[test]
    fn a_source_listed_among_the_mirrors_keeps_its_place() {
        // Vector 28: no edge to the source is added, and it does not end last.
        assert_eq!(
            run(&[&["z1.local/x", SRC, "y2.local/x"]]),
            ["z1.local/x", SRC, "y2.local/x"]
        );
        // Listed last, it is dropped like the implicit one.
        assert_eq!(run(&[&["m.local/x", SRC]]), ["m.local/x"]);
    }

    #[test]
    fn repeated_edges_and_duplicates_do_not_lose_nodes() {
        assert_eq!(run(&[&["a", "b"], &["a", "b"]]), ["a", "b"]);
        // A repeated mirror (possible in an ICSP, which has no set semantics) is a self-loop;
        // the cycle breaker still outputs every node once.
        assert_eq!(run(&[&["a", "a"]]), ["a"]);
        assert_eq!(run(&[&["z", "z"]]), [SRC, "z"]);
    }
}
