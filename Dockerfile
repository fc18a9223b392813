# authproxy container image: slim Python, non-root, configuration from a mounted file and env.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authproxy ./authproxy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --no-create-home authproxy
USER 10001
ENV AUTHPROXY_CONFIG=/etc/authproxy/authproxy.yaml
EXPOSE 4180 9180
# the admin listener must listen on 0.0.0.0:9180 in the mounted config for this check
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9180/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["authproxy"]
CMD ["run"]
