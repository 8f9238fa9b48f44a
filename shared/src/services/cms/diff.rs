//! What changed between two revisions of a page or post: the plain fields that differ, and the
//! body block by block. Blocks the two bodies share in order are unchanged (a longest common
//! subsequence); of the rest, a removed and an added block with the same editor `id` are one
//! block changed (and moved, when its place differs); the others were removed or added.
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldChange {
    pub field: String,
    #[schema(value_type = Object)]
    pub before: Value,
    #[schema(value_type = Object)]
    pub after: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum BlockChange {
    /// In the newer body only, at `index`.
    Added {
        index: usize,
        #[schema(value_type = Object)]
        block: Value,
    },
    /// In the older body only, at `index`.
    Removed {
        index: usize,
        #[schema(value_type = Object)]
        block: Value,
    },
    /// The same block (by its editor `id`) with other content, or at another place.
    Changed {
        before_index: usize,
        after_index: usize,
        #[schema(value_type = Object)]
        before: Value,
        #[schema(value_type = Object)]
        after: Value,
    },
}

/// The `fields` whose values differ (missing counts as null), in the order given.
pub fn fields(before: &Map<String, Value>, after: &Map<String, Value>, fields: &[&str]) -> Vec<FieldChange> {
    fields
        .iter()
        .filter_map(|f| {
            let (b, a) = (
                before.get(*f).cloned().unwrap_or(Value::Null),
                after.get(*f).cloned().unwrap_or(Value::Null),
            );
            (b != a).then(|| FieldChange {
                field: (*f).to_owned(),
                before: b,
                after: a,
            })
        })
        .collect()
}

/// The indexes of a longest common subsequence of equal blocks, as (before, after) pairs.
fn common(before: &[Value], after: &[Value]) -> Vec<(usize, usize)> {
    let (n, m) = (before.len(), after.len());
    // lengths[i][j]: the LCS of before[i..] and after[j..].
    let mut lengths = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let here = if before.get(i) == after.get(j) {
                1 + lengths.get(i + 1).and_then(|r| r.get(j + 1)).copied().unwrap_or(0)
            } else {
                let down = lengths.get(i + 1).and_then(|r| r.get(j)).copied().unwrap_or(0);
                let right = lengths.get(i).and_then(|r| r.get(j + 1)).copied().unwrap_or(0);
                down.max(right)
            };
            if let Some(cell) = lengths.get_mut(i).and_then(|r| r.get_mut(j)) {
                *cell = here;
            }
        }
    }
    let at = |i: usize, j: usize| lengths.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0);
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if before.get(i) == after.get(j) {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if at(i, j + 1) >= at(i + 1, j) {
            // On a tie the older body's blocks stay put: what the newer one put before them
            // was added or moved there.
            j += 1;
        } else {
            i += 1;
        }
    }
    pairs
}

fn editor_id(block: &Value) -> Option<&str> {
    block.get("id").and_then(Value::as_str)
}

/// The body's changes: removals and changes in the older body's order, then additions.
pub fn blocks(before: &[Value], after: &[Value]) -> Vec<BlockChange> {
    let kept = common(before, after);
    let removed: Vec<usize> = (0..before.len())
        .filter(|i| !kept.iter().any(|(b, _)| b == i))
        .collect();
    let mut added: Vec<usize> = (0..after.len()).filter(|j| !kept.iter().any(|(_, a)| a == j)).collect();
    let mut changes = Vec::new();
    for i in removed {
        let Some(old) = before.get(i) else { continue };
        let partner =
            editor_id(old).and_then(|id| added.iter().position(|j| after.get(*j).and_then(editor_id) == Some(id)));
        match partner.map(|p| added.remove(p)) {
            Some(j) => changes.push(BlockChange::Changed {
                before_index: i,
                after_index: j,
                before: old.clone(),
                after: after.get(j).cloned().unwrap_or(Value::Null),
            }),
            None => changes.push(BlockChange::Removed {
                index: i,
                block: old.clone(),
            }),
        }
    }
    changes.extend(added.into_iter().map(|j| BlockChange::Added {
        index: j,
        block: after.get(j).cloned().unwrap_or(Value::Null),
    }));
    changes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn h(id: &str, text: &str) -> Value {
        json!({"type": "heading", "id": id, "level": 2, "text": text})
    }

    #[test]
    fn the_same_body_has_no_changes() {
        let body = vec![h("a", "A"), h("b", "B")];
        assert!(blocks(&body, &body).is_empty());
    }

    #[test]
    fn edits_insertions_removals_and_moves_are_told_apart() {
        let before = vec![
            h("a", "A"),
            h("b", "B"),
            h("c", "C"),
            json!({"type": "cta", "label": "Go", "href": "/x"}),
        ];
        let after = vec![h("c", "C"), h("a", "A"), h("b", "B, better"), h("d", "D")];
        let changes = blocks(&before, &after);
        assert_eq!(
            changes,
            [
                BlockChange::Changed {
                    before_index: 1,
                    after_index: 2,
                    before: h("b", "B"),
                    after: h("b", "B, better")
                },
                BlockChange::Changed {
                    before_index: 2,
                    after_index: 0,
                    before: h("c", "C"),
                    after: h("c", "C")
                },
                BlockChange::Removed {
                    index: 3,
                    block: json!({"type": "cta", "label": "Go", "href": "/x"})
                },
                BlockChange::Added {
                    index: 3,
                    block: h("d", "D")
                },
            ]
        );
        // Blocks without editor ids are removed and added.
        let plain = |t: &str| json!({"type": "heading", "level": 2, "text": t});
        assert_eq!(blocks(&[plain("x")], &[plain("y")]).len(), 2);
        assert_eq!(
            blocks(&[], &[plain("y")]),
            [BlockChange::Added {
                index: 0,
                block: plain("y")
            }]
        );
    }

    #[test]
    fn plain_fields_differ_or_not() {
        let before = json!({"title": "Pricing", "slug": "pricing", "seo": {"title": "P"}});
        let after = json!({"title": "Pricing", "slug": "plans", "seo": {"title": "P"}, "parent_id": "x"});
        let changes = fields(
            before.as_object().unwrap(),
            after.as_object().unwrap(),
            &["title", "slug", "seo", "parent_id"],
        );
        let names: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(names, ["slug", "parent_id"]);
        assert_eq!(changes[1].before, Value::Null);
    }
}
