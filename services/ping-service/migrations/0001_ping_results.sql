CREATE TABLE ping_results (
    id serial PRIMARY KEY,
    host varchar(255) NOT NULL,
    result text NOT NULL
);
