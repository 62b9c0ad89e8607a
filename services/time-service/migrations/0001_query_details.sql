CREATE TABLE query_details (
    id serial PRIMARY KEY,
    ip_address inet NOT NULL,
    query_time timestamp NOT NULL
);
