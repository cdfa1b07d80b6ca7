# Argilla 1.5.1 server for deploy/compose-test.sh, built with nothing downloaded: a Debian root
# file system made by debootstrap (BASE_IMAGE), the host's Python 3.10 (copied to the same path,
# it finds its libpython there) and the site-packages that the host's pip installed from
# deploy/requirements-argilla.txt. The same image serves osmem-server, the search emulator.
ARG BASE_IMAGE=argilla-gateway-test/debian:bookworm
FROM ${BASE_IMAGE}
ARG PYTHON_PREFIX
COPY python/ ${PYTHON_PREFIX}/
COPY site-packages/ ${PYTHON_PREFIX}/lib/python3.10/site-packages/
RUN ln -s "${PYTHON_PREFIX}/lib/python3.10/site-packages/osmem_server/bin/osmem-server" /usr/local/bin/osmem-server \
 && chmod 0755 "${PYTHON_PREFIX}/lib/python3.10/site-packages/osmem_server/bin/osmem-server" \
 && "${PYTHON_PREFIX}/bin/python" -c "import argilla, uvicorn; assert argilla.__version__ == '1.5.1', argilla.__version__"
ENV PATH=${PYTHON_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1
