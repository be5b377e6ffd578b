-- The controller's working state, one row per service and environment: what
-- serves, the rollout in progress (its machine, weights, instances with pid,
-- process start time and port). Written before every action, read when
-- `hatoba up` starts again after a crash. The store keeps it as opaque JSON.

CREATE TABLE controller_state (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (service, environment)
);
