//! End-to-end tests: real `xcat3-server` processes, real SQLite files and PostgreSQL databases,
//! the real `xcat3` CLI. One test binary; one module per area.
//!
//! `inventory` holds the suite that runs on both back ends (instantiated by `backend_suite!`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod abuse;
mod chart_pods;
mod cli;
mod cluster;
mod compose;
mod containers;
mod deploy;
mod helm;
mod hosts;
mod inventory;
mod network;
mod observability;
mod power;
mod security;
mod tls;

/// Declares, for each listed test function `f(Backend)`, one `#[tokio::test]` per back end.
#[macro_export]
macro_rules! backend_suite {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(xcat3_tests::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(xcat3_tests::Backend::Postgres).await
                }
            )+
        }
    };
}
