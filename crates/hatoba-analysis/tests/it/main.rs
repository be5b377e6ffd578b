//! Integration tests: the facade, and seeded simulations of deployments
//! judged every simulated second (false aborts, detection times).

mod facade;
mod sim;
