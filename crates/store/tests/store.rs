//! The store's own conformance suite, on SQLite and on PostgreSQL: what the api relies on beyond
//! plain reads and writes (revisions, conflicts, state ownership).

#![allow(clippy::unwrap_used)]

use xcat3_store::{Error, Store};
use xcat3_tests::PgDatabase;
use xcat3_types::{Node, ProvisionState};

struct Db {
    store: Store,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    Db {
        store: Store::connect(&url).await.unwrap(),
        _dir: dir,
        _pg: None,
    }
}

async fn postgres() -> Db {
    let (pg, url) = PgDatabase::create().unwrap();
    Db {
        store: Store::connect(&url).await.unwrap(),
        _dir: tempfile::tempdir().unwrap(),
        _pg: Some(pg),
    }
}

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| Node::new(*n)).collect()
}

async fn revisions_guard_against_lost_updates(db: Db) {
    let s = &db.store;
    s.create_nodes(&nodes(&["a", "b"])).await.unwrap();
    let read = s.get_nodes(&["a".into(), "b".into()]).await.unwrap();
    assert!(read.iter().all(|r| r.revision == 1));

    // A writer that read revision 1 succeeds and bumps it.
    let mut a = read[0].node.clone();
    a.labels.insert("k".into(), "first".into());
    assert!(
        s.save_nodes(&[(a.clone(), 1)], false, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.get_nodes(&["a".into()]).await.unwrap()[0].revision, 2);

    // A second writer that also read revision 1 is refused for that node, not for the other.
    let mut stale = read[0].node.clone();
    stale.labels.insert("k".into(), "second".into());
    let mut b = read[1].node.clone();
    b.labels.insert("k".into(), "b".into());
    let conflicts = s
        .save_nodes(&[(stale.clone(), 1), (b.clone(), 1)], false, false)
        .await
        .unwrap();
    assert_eq!(conflicts, ["a"]);
    let now = s.get_nodes(&["a".into(), "b".into()]).await.unwrap();
    assert_eq!(
        now[0].node.labels["k"], "first",
        "the first writer's change survives"
    );
    assert_eq!(now[1].node.labels["k"], "b");

    // All or nothing: one stale node, nothing written.
    let mut b2 = now[1].node.clone();
    b2.labels.insert("k".into(), "b2".into());
    let conflicts = s
        .save_nodes(&[(stale, 1), (b2, now[1].revision)], false, true)
        .await
        .unwrap();
    assert_eq!(conflicts, ["a"]);
    assert_eq!(
        s.get_nodes(&["b".into()]).await.unwrap()[0].node.labels["k"],
        "b"
    );

    // A node deleted meanwhile is a conflict too, and is not brought back.
    s.delete_nodes(&["b".into()]).await.unwrap();
    assert_eq!(s.save_nodes(&[(b, 2)], false, false).await.unwrap(), ["b"]);
    assert!(s.get_nodes(&["b".into()]).await.unwrap().is_empty());
}

async fn inventory_updates_leave_conductor_state_alone(db: Db) {
    let s = &db.store;
    s.create_nodes(&nodes(&["c"])).await.unwrap();
    let mut c = s.get_nodes(&["c".into()]).await.unwrap().remove(0).node;
    c.provision_state = ProvisionState::Deployed;
    s.save_nodes(&[(c, 1)], false, false).await.unwrap();
    let c = s.get_nodes(&["c".into()]).await.unwrap().remove(0);
    assert_eq!(c.node.provision_state, ProvisionState::Available);
}

async fn duplicate_names_are_a_conflict(db: Db) {
    let s = &db.store;
    s.create_nodes(&nodes(&["d"])).await.unwrap();
    let err = s.create_nodes(&nodes(&["e", "d"])).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert!(
        s.get_nodes(&["e".into()]).await.unwrap().is_empty(),
        "the transaction rolled back"
    );
}

async fn stale_conductors_are_fenced(db: Db) {
    use xcat3_store::NodeUpdate;
    use xcat3_types::PowerState;
    let s = &db.store;
    s.create_nodes(&nodes(&["f"])).await.unwrap();
    let update = |state| NodeUpdate {
        node: "f".into(),
        power_state: Some(state),
        event: Some(("power".into(), format!("{state}"))),
    };
    assert!(s.claim_shard(7, 10, "a").await.unwrap());
    s.conductor_write(7, 10, "a", &[update(PowerState::On)])
        .await
        .unwrap();
    // b claims the shard with a newer token: a's writes are refused from then on.
    assert!(s.claim_shard(7, 20, "b").await.unwrap());
    let err = s
        .conductor_write(7, 10, "a", &[update(PowerState::Off)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fenced {
                shard: 7,
                token: 10,
                epoch: 20
            }
        ),
        "{err:?}"
    );
    // An older claim arriving late changes nothing.
    assert!(!s.claim_shard(7, 15, "c").await.unwrap());
    s.conductor_write(7, 20, "b", &[update(PowerState::Off)])
        .await
        .unwrap();
    let node = s.get_nodes(&["f".into()]).await.unwrap().remove(0).node;
    assert_eq!(node.power_state, PowerState::Off);
    let events = s.node_events(&["f".into()], 10).await.unwrap();
    let who: Vec<&str> = events.iter().map(|e| e.conductor.as_str()).collect();
    assert_eq!(who, ["a", "b"], "the fenced write left no event");
    // Deleting the node deletes its history.
    s.delete_nodes(&["f".into()]).await.unwrap();
    assert!(s.node_events(&["f".into()], 10).await.unwrap().is_empty());
}

macro_rules! suite {
    ($($test:ident),+) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $test() { super::$test(super::sqlite().await).await })+
        }
        mod on_postgres {
            $(#[tokio::test] async fn $test() { super::$test(super::postgres().await).await })+
        }
    };
}

suite!(
    stale_conductors_are_fenced,
    revisions_guard_against_lost_updates,
    inventory_updates_leave_conductor_state_alone,
    duplicate_names_are_a_conflict
);
