//! MySQL parser tests: real captures (`tests/fixtures/mysql/*.bin`), hand-made packets,
//! segmentation invariance, gaps, mid-session attach, redaction.
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::protocols::db::DbEvent;
use crate::protocols::postgres::tests::{
    PASSWORD, Rec, assert_no_secret, calls, load, run, run_with, skipped,
};

fn my(path: &str) -> (Vec<Rec>, Vec<DbEvent>) {
    let recs = load(path);
    let ev = run(&mut MysqlParser::default(), &recs);
    (recs, ev)
}

#[test]
fn dump_fixtures() {
    for f in [
        "mysql/my_pymysql.bin",
        "mysql/my_connector_prepared.bin",
        "mysql/my_authfail.bin",
    ] {
        let (_, ev) = my(f);
        if std::env::var("PG_DUMP").is_ok() {
            println!("==== {f}");
            for e in &ev {
                match e {
                    DbEvent::Call(c) => println!(
                        "CALL {} {} sl={} err={:?} {}",
                        c.index, c.method, c.session_level, c.error, c.detail
                    ),
                    other => println!("{other:?}"),
                }
            }
        }
    }
}
