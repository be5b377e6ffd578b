//! Integration tests: the facade, analysis runs, and seeded simulations of
//! deployments judged every simulated second (false aborts, detection times).

mod facade;
mod run;
mod sim;
mod window;
