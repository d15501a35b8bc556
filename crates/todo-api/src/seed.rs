//! The original tododb's sample rows (1 TODO, 5 PROGRESS, 2 DONE), embedded in the binary.

use crate::model::{NewTodo, Status};

const SAMPLE_ROWS: &str = include_str!("../seed/tododb-sample-rows.tsv");

/// The sample rows in file order, skipping the header line.
pub fn sample_rows() -> Vec<NewTodo> {
    SAMPLE_ROWS
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let mut next = || {
                fields
                    .next()
                    .expect("three tab-separated fields")
                    .to_string()
            };
            let (title, content, status) = (next(), next(), next());
            NewTodo {
                title,
                content,
                status: status.trim().parse::<Status>().expect("a known status"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_rows_one_todo_five_progress_two_done() {
        let rows = sample_rows();
        assert_eq!(rows.len(), 8);
        let count = |s| rows.iter().filter(|r| r.status == s).count();
        assert_eq!(
            (
                count(Status::Todo),
                count(Status::Progress),
                count(Status::Done)
            ),
            (1, 5, 2)
        );
        assert!(
            rows.iter()
                .all(|r| !r.title.is_empty() && r.title.chars().count() <= 188)
        );
    }
}
