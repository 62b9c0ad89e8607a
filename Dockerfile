# The Tessera operator image, for people with Docker (`make image` builds the same image
# without a container engine). A static (musl) binary on distroless, as a non-root user.
#   docker build -t tessera/operator:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --target x86_64-unknown-linux-musl -p tessera-operator --bin operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/dist/operator /usr/local/bin/tessera-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tessera-operator"]
