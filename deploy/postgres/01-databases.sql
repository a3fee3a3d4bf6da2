-- One database per service (DESIGN.md §1: services share no tables).
-- Run once by the postgres image, as POSTGRES_USER, when the data volume is empty
-- (/docker-entrypoint-initdb.d); later changes here need a manual CREATE DATABASE.
-- Tables come from each service's migrations (compose's <service>-migrate one-shots).
CREATE DATABASE registry;
CREATE DATABASE checkpoint;
CREATE DATABASE notifier;
CREATE DATABASE monitor;
