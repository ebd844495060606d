# kcl-worker: multi-stage build, small non-root runtime image.
#   docker build -t kcl-worker .
#   docker run -e KCL_WORKER_APPLICATION=billing -e KCL_WORKER_STREAMS=orders -e AWS_REGION=eu-west-1 -p 8080:8080 kcl-worker
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kcl-worker \
    && cp target/release/kcl-worker /usr/local/bin/kcl-worker

# glibc + libgcc, CA certificates, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/kcl-worker /usr/local/bin/kcl-worker
ENV KCL_WORKER_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kcl-worker"]
