//! The store's own conformance suite, on SQLite and on PostgreSQL: what the api relies on beyond
//! plain reads and writes (revisions, conflicts, state ownership).

#![allow(clippy::unwrap_used)]

use xcat3_store::{Error, NetworkWrite, Store};
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

async fn events_are_capped_per_node(db: Db) {
    use xcat3_store::{EVENTS_PER_NODE, NodeUpdate};
    let s = &db.store;
    s.create_nodes(&nodes(&["busy", "quiet"])).await.unwrap();
    assert!(s.claim_shard(1, 1, "c").await.unwrap());
    let event = |node: &str, i: usize| NodeUpdate {
        node: node.into(),
        power_state: None,
        event: Some(("error".into(), format!("power status failed #{i}"))),
    };
    s.conductor_write(1, 1, "c", &[event("quiet", 0)])
        .await
        .unwrap();
    // A dead BMC polled 250 times: 250 events written, in batches of 10.
    for round in 0..25 {
        let batch: Vec<NodeUpdate> = (0..10).map(|i| event("busy", round * 10 + i)).collect();
        s.conductor_write(1, 1, "c", &batch).await.unwrap();
    }
    let busy = s.node_events(&["busy".into()], 1000).await.unwrap();
    assert_eq!(busy.len(), EVENTS_PER_NODE);
    assert_eq!(
        busy.last().unwrap().message,
        "power status failed #249",
        "the newest are kept"
    );
    assert_eq!(
        busy[0].message,
        format!("power status failed #{}", 250 - EVENTS_PER_NODE)
    );
    let quiet = s.node_events(&["quiet".into()], 1000).await.unwrap();
    assert_eq!(quiet.len(), 1, "other nodes keep their history");
    // Several nodes in one query: node by node in the order asked, oldest first, at most
    // `limit` each; names without events or nodes are left out.
    let both = s
        .node_events(&["quiet".into(), "nobody".into(), "busy".into()], 3)
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = both
        .iter()
        .map(|e| (e.node.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("quiet", "power status failed #0"),
            ("busy", "power status failed #247"),
            ("busy", "power status failed #248"),
            ("busy", "power status failed #249"),
        ]
    );
}

fn network(name: &str, subnet: [u8; 4], prefix_mask: [u8; 4]) -> xcat3_types::Network {
    xcat3_types::Network {
        name: name.into(),
        subnet: subnet.into(),
        netmask: prefix_mask.into(),
        gateway: None,
        dynamic_range: None,
        nameservers: Vec::new(),
        domain: None,
        mtu: None,
    }
}

/// Writes `write` through [`Store::write_network`] without rules.
async fn write_network(s: &Store, write: NetworkWrite) -> Result<(), Error> {
    s.write_network(false, |_| Ok::<_, Error>((write, ())))
        .await
}

async fn networks_are_stored_changed_and_deleted(db: Db) {
    let s = &db.store;
    let before = s.inventory_revision().await.unwrap();
    let mut net = network("pxe", [10, 1, 0, 0], [255, 255, 0, 0]);
    write_network(s, NetworkWrite::Create(net.clone()))
        .await
        .unwrap();
    assert!(matches!(
        write_network(s, NetworkWrite::Create(net.clone())).await,
        Err(Error::Conflict(_))
    ));
    let bmc = network("bmc", [10, 2, 0, 0], [255, 255, 0, 0]);
    write_network(s, NetworkWrite::Create(bmc)).await.unwrap();
    net.mtu = Some(9000);
    net.domain = Some("cluster".into());
    write_network(s, NetworkWrite::Replace(net.clone()))
        .await
        .unwrap();
    assert_eq!(s.get_network("pxe").await.unwrap(), Some(net.clone()));
    let names: Vec<String> = s
        .list_networks()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["bmc", "pxe"]);
    write_network(s, NetworkWrite::Delete("bmc".into()))
        .await
        .unwrap();
    assert_eq!(s.get_network("bmc").await.unwrap(), None);
    // Network changes move the inventory revision (the agents follow it).
    let after = s.inventory_revision().await.unwrap();
    assert!(after > before);
    // A refused write writes nothing.
    let refused = s
        .write_network(false, |view| {
            assert_eq!(view.networks.len(), 1);
            Err::<(NetworkWrite, ()), _>(Error::Stale("refused".into()))
        })
        .await;
    assert!(matches!(refused, Err(Error::Stale(_))));
    assert_eq!(s.inventory_revision().await.unwrap(), after);
}

fn nic(mac: &str, ip: Option<&str>) -> xcat3_types::Nic {
    xcat3_types::Nic {
        name: "eth0".into(),
        mac: mac.parse().unwrap(),
        ip: ip.map(|ip| ip.parse().unwrap()),
        primary: true,
    }
}

/// The race a network delete and a node create used to lose: the api checks a node's address
/// against the networks, the network goes, then the node is written. The store checks again
/// inside the write and refuses; network writes see every NIC address under the same lock.
async fn network_and_node_writes_check_each_other(db: Db) {
    let s = &db.store;
    let pxe = network("pxe", [10, 1, 0, 0], [255, 255, 0, 0]);
    write_network(s, NetworkWrite::Create(pxe)).await.unwrap();
    let mut a = Node::new("a1");
    a.nics = vec![nic("52:54:00:00:00:01", Some("10.1.0.5"))];
    s.create_nodes(&[a]).await.unwrap();
    let seen = s
        .write_network(true, |view| {
            Err::<(NetworkWrite, ()), _>(Error::Stale(format!("{:?}", view.nic_addresses)))
        })
        .await;
    let Err(Error::Stale(seen)) = seen else {
        panic!("{seen:?}")
    };
    assert_eq!(seen, "[(10.1.0.5, \"a1\")]");

    // Checked while "bmc" existed, written after it went.
    let bmc = network("bmc", [10, 2, 0, 0], [255, 255, 0, 0]);
    write_network(s, NetworkWrite::Create(bmc)).await.unwrap();
    let mut b = Node::new("b1");
    b.nics = vec![nic("52:54:00:00:00:02", Some("10.2.0.5"))];
    write_network(s, NetworkWrite::Delete("bmc".into()))
        .await
        .unwrap();
    let before = s.inventory_revision().await.unwrap();
    let err = s.create_nodes(std::slice::from_ref(&b)).await.unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err}");
    assert!(err.to_string().contains("node b1"), "{err}");
    assert_eq!(s.inventory_revision().await.unwrap(), before);
    assert_eq!(s.node_names().await.unwrap(), ["a1"]);

    // The same for an update that moves a NIC, and for one that moves it home.
    let read = s.get_nodes(&["a1".into()]).await.unwrap().remove(0);
    let (mut a, rev) = (read.node, read.revision);
    a.nics[0].ip = Some("10.2.0.6".parse().unwrap());
    let err = s.save_nodes(&[(a.clone(), rev)], true, true).await;
    assert!(matches!(err, Err(Error::Stale(_))), "{err:?}");
    a.nics[0].ip = Some("10.1.0.6".parse().unwrap());
    assert!(
        s.save_nodes(&[(a, rev)], true, true)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn osimages_and_credentials_are_stored_and_deleted(db: Db) {
    let s = &db.store;
    let image = xcat3_store::OsImage {
        name: "rocky9.4-x86_64-install-compute".into(),
        distro: "rocky".into(),
        version: "9.4".into(),
        arch: "x86_64".into(),
        install_method: "kickstart".into(),
        kernel: "trees/ab/images/pxeboot/vmlinuz".into(),
        initrd: "trees/ab/images/pxeboot/initrd.img".into(),
        repo_root: "trees/ab".into(),
        created_at: 1,
        source: "Rocky.iso".into(),
        sha256: "ab".repeat(32),
    };
    s.create_osimage(&image).await.unwrap();
    assert_eq!(
        s.get_osimage(&image.name).await.unwrap().map(|i| i.sha256),
        Some(image.sha256.clone())
    );
    assert_eq!(s.list_osimages().await.unwrap().len(), 1);
    assert_eq!(s.osimages_from(&image.sha256).await.unwrap().len(), 1);
    assert!(s.osimages_from("cd").await.unwrap().is_empty());
    assert_eq!(
        s.existing_osimages(&[image.name.clone(), "nope".into()])
            .await
            .unwrap(),
        std::slice::from_ref(&image.name)
    );
    // An image a node refers to is not deleted.
    let mut n = Node::new("n1");
    n.osimage = Some(image.name.clone());
    s.create_nodes(&[n]).await.unwrap();
    assert_eq!(
        s.delete_osimage(&image.name).await.unwrap(),
        xcat3_store::OsImageDeletion::InUse(vec!["n1".into()])
    );
    s.delete_nodes(&["n1".into()]).await.unwrap();
    assert_eq!(
        s.delete_osimage(&image.name).await.unwrap(),
        xcat3_store::OsImageDeletion::Deleted
    );
    assert_eq!(
        s.delete_osimage(&image.name).await.unwrap(),
        xcat3_store::OsImageDeletion::NotFound
    );

    let p = s
        .create_passwd("system", "root", "$6$salt$hash", "sha512")
        .await
        .unwrap();
    assert_eq!((p.key.as_str(), p.username.as_str()), ("system", "root"));
    assert!(
        s.create_passwd("system", "root", "$6$x$y", "sha512")
            .await
            .is_err()
    );
    assert_eq!(
        s.passwd_hash("system").await.unwrap().as_deref(),
        Some("$6$salt$hash")
    );
    assert_eq!(s.list_passwds().await.unwrap().len(), 1);
    assert!(s.delete_passwd("system").await.unwrap());
    assert!(!s.delete_passwd("system").await.unwrap());
    assert_eq!(s.passwd_hash("system").await.unwrap(), None);
}

async fn services_heartbeat_and_leave(db: Db) {
    let s = &db.store;
    let record = |id: &str, at: i64| xcat3_store::ServiceRecord {
        id: id.into(),
        hostname: "h1".into(),
        kind: "api".into(),
        version: "0.1.0".into(),
        started_at: 1,
        heartbeat_at: at, // the store records its own clock
    };
    s.heartbeat(&record("a", 100)).await.unwrap();
    s.heartbeat(&record("b", 100)).await.unwrap();
    s.heartbeat(&record("a", 200)).await.unwrap();
    let listed = s.list_services().await.unwrap();
    assert_eq!(listed.len(), 2);
    // `a` leaves (the heartbeat time is the store's clock); then `b` is stale.
    s.unregister_service("a", 0).await.unwrap();
    let left: Vec<String> = s
        .list_services()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ["b"]);
    s.unregister_service("nobody", xcat3_store::now_ms() + 1000)
        .await
        .unwrap();
    assert!(s.list_services().await.unwrap().is_empty());
    s.ping().await.unwrap();
    assert!(!s.backend_name().is_empty());
}

async fn node_lookups_answer_by_name_mac_ip_and_group(db: Db) {
    let s = &db.store;
    let pxe = network("pxe", [10, 1, 0, 0], [255, 255, 0, 0]);
    write_network(s, NetworkWrite::Create(pxe)).await.unwrap();
    let mut writes = s.subscribe_writes();
    let mut a = Node::new("a1");
    a.groups = vec!["rack1".into(), "compute".into()];
    a.nics = vec![xcat3_types::Nic {
        name: "eth0".into(),
        mac: "52:54:00:00:00:01".parse().unwrap(),
        ip: Some("10.1.0.1".parse().unwrap()),
        primary: true,
    }];
    let b = Node::new("b1");
    s.create_nodes(&[a, b]).await.unwrap();
    let w = writes.recv().await.unwrap();
    assert_eq!(w.nodes, ["a1", "b1"]);
    assert_eq!(s.node_names().await.unwrap().len(), 2);
    let mut all = s.node_names_and_groups().await.unwrap();
    all.sort();
    assert_eq!(
        all[0],
        ("a1".into(), vec!["rack1".into(), "compute".into()])
    );
    assert_eq!(
        s.node_groups(&["b1".into(), "zz".into()]).await.unwrap(),
        [("b1".to_owned(), Vec::<String>::new())]
    );
    assert_eq!(
        s.existing_node_names(&["a1".into(), "zz".into()])
            .await
            .unwrap(),
        ["a1".to_owned()].into_iter().collect()
    );
    assert_eq!(
        s.nic_owners_by_mac(&["52:54:00:00:00:01".into()])
            .await
            .unwrap()
            .get("52:54:00:00:00:01")
            .map(String::as_str),
        Some("a1")
    );
    assert_eq!(
        s.nic_owners_by_ip(&["10.1.0.1".into(), "10.1.0.2".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    let hosts = s.boot_hosts_of(&["a1".into()]).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!((hosts[0].node.as_str(), hosts[0].primary), ("a1", true));
    let counts = s.node_state_counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.2).sum::<i64>(), 2);
    assert_eq!(s.max_shard_epoch().await.unwrap(), 0);
    assert!(s.claim_shard(3, 42, "c").await.unwrap());
    assert_eq!(s.max_shard_epoch().await.unwrap(), 42);
    // A delete says which nodes went, apart from those created or changed.
    s.delete_nodes(&["b1".into()]).await.unwrap();
    let w = writes.recv().await.unwrap();
    assert_eq!(
        (w.nodes.len(), w.deleted.as_slice()),
        (0, ["b1".to_owned()].as_slice())
    );
}

async fn dynamic_blocks_follow_demand_and_never_overlap(db: Db) {
    use std::net::Ipv4Addr;
    use xcat3_store::MAX_BLOCKS_PER_CLAIM;
    use xcat3_types::IpRange;
    let s = &db.store;
    // 49,152 addresses: 3,072 blocks of 16.
    let range = IpRange {
        start: Ipv4Addr::new(10, 9, 0, 0),
        end: Ipv4Addr::new(10, 9, 191, 255),
    };
    let claim = |agent: &'static str, want: Option<u64>| async move {
        s.agent_blocks(agent, "pool", range, 16, 60_000, want)
            .await
            .unwrap()
    };
    // A first claim takes a sixteenth of the range, at most 8 blocks.
    assert_eq!(claim("a", Some(0)).await.len(), 8);
    // Later ones double what the agent holds, or bring what it asked for.
    assert_eq!(claim("a", Some(0)).await.len(), 16);
    assert_eq!(claim("a", Some(1600)).await.len(), 16 + 100);
    // Within the cap per claim.
    let held = claim("a", Some(1_000_000)).await.len();
    assert_eq!(held, 116 + MAX_BLOCKS_PER_CLAIM);
    // Renewing claims nothing; another agent gets other blocks.
    assert_eq!(claim("a", None).await.len(), held);
    let b = claim("b", Some(800)).await;
    assert_eq!(b.len(), 50);
    let a = claim("a", None).await;
    for x in &b {
        assert!(
            a.iter()
                .all(|y| y.range.end < x.range.start || x.range.end < y.range.start),
            "{x:?} overlaps"
        );
    }
}

async fn discovered_machines_page_and_expire(db: Db) {
    use xcat3_store::DiscoveredRecord;
    let s = &db.store;
    let now = xcat3_store::now_ms();
    let machines: Vec<DiscoveredRecord> = (0..25)
        .map(|i| DiscoveredRecord {
            mac: format!("52:54:00:00:09:{i:02x}"),
            ip: String::new(),
            network: "n".into(),
            agent: "a".into(),
            client_arch: -1,
            vendor_class: String::new(),
            // Pairs share a first_seen, so the page key needs the MAC too.
            first_seen: now - 1000 + i64::from(i / 2),
            last_seen: now - 100_000 + i64::from(i) * 1000,
        })
        .collect();
    s.record_discovered(&machines).await.unwrap();
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let (page, next) = s.list_discovered(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        seen.extend(page.into_iter().map(|m| m.mac));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let all: Vec<String> = machines.iter().map(|m| m.mac.clone()).collect();
    assert_eq!(seen, all, "every machine once, oldest first");
    // Not seen for 90 s: the first 10 go; then only the 5 most recently seen are kept.
    assert_eq!(s.expire_discovered(now - 90_000, 1000).await.unwrap(), 10);
    assert_eq!(s.expire_discovered(now - 90_000, 5).await.unwrap(), 10);
    let (left, next) = s.list_discovered(None, 100).await.unwrap();
    assert!(next.is_none());
    let left: Vec<String> = left.into_iter().map(|m| m.mac).collect();
    assert_eq!(left, all[20..].to_vec());
}

fn start(token: &str, deadline: i64) -> xcat3_store::DeployStart {
    xcat3_store::DeployStart {
        trace_context: format!(
            "00-{}-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736"
        ),
        osimage: "img".into(),
        token: token.into(),
        deadline,
        ssh_keys: vec!["ssh-ed25519 AAAA k1".into(), "ssh-ed25519 BBBB k2".into()],
        reboot: false,
    }
}

fn change(
    node: &str,
    event: xcat3_types::ProvisionEvent,
    start: Option<xcat3_store::DeployStart>,
) -> xcat3_store::StateChange {
    xcat3_store::StateChange {
        node: node.into(),
        event,
        message: String::new(),
        start,
    }
}

async fn deploys_follow_the_state_machine_and_tokens_work_once(db: Db) {
    use xcat3_store::{CallbackError, CallbackReport, ChangeOutcome, Fence};
    use xcat3_types::ProvisionEvent::{Deploy, Published, Timeout, Undeploy};
    let s = &db.store;
    let mut with_nics = nodes(&["d1", "d2", "d3"]);
    for (i, n) in with_nics.iter_mut().enumerate() {
        n.nics.push(xcat3_types::Nic {
            name: "eth0".into(),
            mac: format!("52:54:00:00:00:0{i}").parse().unwrap(),
            ip: None,
            primary: true,
        });
    }
    s.create_nodes(&with_nics).await.unwrap();
    assert!(s.claim_shard(3, 5, "c").await.unwrap());
    let fence = Fence {
        shard: 3,
        token: 5,
        conductor: "c",
    };
    let far = xcat3_store::now_ms() + 3_600_000;
    let revision = s.inventory_revision().await.unwrap();
    let out = s
        .change_states(
            Some(fence),
            "c",
            &[
                change("d1", Deploy, Some(start("tok1", far))),
                change("d2", Deploy, Some(start("tok2", 0))),
                change("d3", Published, None),
                change("nope", Deploy, Some(start("tok3", far))),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out[0], ChangeOutcome::Done(ProvisionState::Deploying));
    assert_eq!(out[1], ChangeOutcome::Done(ProvisionState::Deploying));
    assert!(matches!(out[2], ChangeOutcome::Refused(r) if r.from == ProvisionState::Available));
    assert_eq!(out[3], ChangeOutcome::NotFound);
    assert!(
        s.inventory_revision().await.unwrap() > revision,
        "agents must learn of deploys"
    );
    let d1 = s.deploy_by_token("tok1").await.unwrap().unwrap();
    assert_eq!((d1.node.as_str(), d1.start.ssh_keys.len()), ("d1", 2));
    let table = s.boot_table().await.unwrap();
    let d1_boot = table.hosts.iter().find(|h| h.node == "d1").unwrap();
    assert_eq!(d1_boot.deploy_token.as_deref(), Some("tok1"));
    assert_eq!(
        d1_boot.osimage.as_deref(),
        Some("img"),
        "the deploy's image wins"
    );
    let d3_boot = table.hosts.iter().find(|h| h.node == "d3").unwrap();
    assert!(d3_boot.deploy_token.is_none());
    s.change_states(
        Some(fence),
        "c",
        &[change("d1", Published, None), change("d2", Published, None)],
    )
    .await
    .unwrap();

    // A stale conductor changes nothing.
    assert!(s.claim_shard(3, 6, "c2").await.unwrap());
    let err = s
        .change_states(Some(fence), "c", &[change("d1", Undeploy, None)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err:?}");

    // Callbacks: d1 succeeds once; d2's deadline passed; a made-up token is unknown.
    let report = |token: &str| CallbackReport {
        token: token.into(),
        success: true,
        message: String::new(),
        source: None,
    };
    // A callback from an address other than the node's is refused and leaves the token valid
    // (d1's NIC has no address, so no source matches).
    let stranger = CallbackReport {
        source: Some("10.9.9.9".into()),
        ..report("tok1")
    };
    let refused = s.finish_deploys("image", &[stranger]).await.unwrap();
    assert!(
        matches!(&refused[0], Err(CallbackError::WrongSource { node, .. }) if node == "d1"),
        "{refused:?}"
    );
    let results = s
        .finish_deploys(
            "image",
            &[
                report("tok1"),
                report("tok2"),
                report("forged"),
                report("tok1"),
            ],
        )
        .await
        .unwrap();
    let finished = results[0].clone().unwrap();
    assert_eq!(finished.node, "d1");
    assert_eq!(
        finished.trace_context,
        start("", 0).trace_context,
        "the deploy's trace is kept"
    );
    assert_eq!(results[1], Err(CallbackError::Expired("d2".into())));
    assert_eq!(results[2], Err(CallbackError::UnknownToken));
    assert_eq!(
        results[3],
        Err(CallbackError::UnknownToken),
        "a token works once"
    );
    let again = s.finish_deploys("image", &[report("tok1")]).await.unwrap();
    assert_eq!(again[0], Err(CallbackError::UnknownToken));
    assert!(s.deploy_by_token("tok1").await.unwrap().is_none());
    let states = s.get_nodes(&["d1".into(), "d2".into()]).await.unwrap();
    assert_eq!(states[0].node.provision_state, ProvisionState::Deployed);
    assert_eq!(states[1].node.provision_state, ProvisionState::WaitCallback);

    // The timeout sweep finds d2, and only d2; failing it ends its deploy.
    assert_eq!(
        s.expired_deploys(xcat3_store::now_ms()).await.unwrap(),
        ["d2"]
    );
    let fence = Fence {
        shard: 3,
        token: 6,
        conductor: "c2",
    };
    let out = s
        .change_states(
            Some(fence),
            "c2",
            &[change("d2", Timeout, None), change("d1", Timeout, None)],
        )
        .await
        .unwrap();
    assert_eq!(out[0], ChangeOutcome::Done(ProvisionState::DeployFailed));
    assert!(
        matches!(out[1], ChangeOutcome::Refused(_)),
        "a deployed node cannot time out"
    );
    assert!(
        s.expired_deploys(xcat3_store::now_ms())
            .await
            .unwrap()
            .is_empty()
    );
    let events = s.node_events(&["d2".into()], 10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "deploy: available → deploying",
            "published: deploying → wait-callback",
            "timeout: wait-callback → deploy-failed"
        ]
    );
}

/// Secrets written before a key are sealed by `reseal_secrets`, read back through the key, and
/// moved to a new key on rotation; a store without the key cannot read them.
async fn secrets_are_sealed_and_resealed(db: Db) {
    use xcat3_store::{Resealed, SealingKeys};
    let plain = db.store.clone();
    let mut n = Node::new("n1");
    n.control.set("bmc_password", "pw-1234".into()).unwrap();
    n.control.set("bmc_address", "10.0.0.9".into()).unwrap();
    plain.create_nodes(&[n]).await.unwrap();
    plain
        .create_passwd("system", "root", "$6$salt$hash", "sha512")
        .await
        .unwrap();
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    let one = plain.clone().with_sealing(SealingKeys::new(Some(&k1), &[]));
    let all = Resealed {
        nodes: 1,
        credentials: 1,
    };
    assert_eq!(one.reseal_secrets().await.unwrap(), all);
    assert_eq!(one.reseal_secrets().await.unwrap(), Resealed::default());
    let read = |s: Store| async move {
        let node = s.get_nodes(&["n1".into()]).await?.remove(0).node;
        let hash = s.passwd_hash("system").await?;
        Ok::<_, Error>((
            node.control.get("bmc_password").map(String::from),
            node.control.get("bmc_address").map(String::from),
            hash,
        ))
    };
    let expected = (
        Some("pw-1234".to_owned()),
        Some("10.0.0.9".to_owned()),
        Some("$6$salt$hash".to_owned()),
    );
    assert_eq!(read(one.clone()).await.unwrap(), expected);
    assert!(read(plain.clone()).await.is_err(), "read without the key");
    // Rotation.
    let rotating = plain
        .clone()
        .with_sealing(SealingKeys::new(Some(&k2), &[k1]));
    assert_eq!(read(rotating.clone()).await.unwrap(), expected);
    assert_eq!(rotating.reseal_secrets().await.unwrap(), all);
    let two = plain.clone().with_sealing(SealingKeys::new(Some(&k2), &[]));
    assert_eq!(read(two.clone()).await.unwrap(), expected);
    assert!(
        read(one).await.is_err(),
        "the old key alone no longer reads them"
    );
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
    networks_are_stored_changed_and_deleted,
    network_and_node_writes_check_each_other,
    osimages_and_credentials_are_stored_and_deleted,
    services_heartbeat_and_leave,
    node_lookups_answer_by_name_mac_ip_and_group,
    dynamic_blocks_follow_demand_and_never_overlap,
    secrets_are_sealed_and_resealed,
    deploys_follow_the_state_machine_and_tokens_work_once,
    stale_conductors_are_fenced,
    events_are_capped_per_node,
    discovered_machines_page_and_expire,
    revisions_guard_against_lost_updates,
    inventory_updates_leave_conductor_state_alone,
    duplicate_names_are_a_conflict
);

/// Replicas starting together against an empty PostgreSQL database each find every migration
/// pending; without the migration lock they race to create the same tables and all but one fail
/// ("relation already exists", or a duplicate key in the catalogue).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_migrating_an_empty_postgresql_at_once_all_succeed() {
    let (_pg, url) = PgDatabase::create().unwrap();
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        replicas.spawn(async move { Store::connect(&url).await.map(drop) });
    }
    let mut failures = Vec::new();
    while let Some(r) = replicas.join_next().await {
        if let Err(e) = r.unwrap() {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    let store = Store::connect(&url).await.unwrap();
    store.create_nodes(&nodes(&["a"])).await.unwrap();
}
