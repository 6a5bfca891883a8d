# Two images for docker-compose.yaml, one per target:
#   airflow   the Airflow components: the official Airflow image plus this project's locked
#             requirements (requirements.txt) and the retraining package as a provider;
#   emulator  the local Azure ML emulator, on its own requirements (emulator/requirements.txt:
#             scikit-learn, skops, ...), which the Airflow image does not carry.
# `docker build .` builds the last target, airflow; `docker build --target emulator .` the emulator.

FROM python:3.11-slim-bookworm AS emulator
COPY emulator/requirements.txt /opt/project/emulator/requirements.txt
RUN pip install --no-cache-dir --no-deps -r /opt/project/emulator/requirements.txt
COPY emulator /opt/project/emulator
# Its state, models and TLS certificate go to /opt/azureml-emulator (a volume the Airflow services
# read): owned by the same non-root user id as the Airflow image's.
RUN useradd --uid 50000 --gid 0 --no-create-home --home-dir /opt/project emulator \
    && mkdir -p /opt/azureml-emulator && chown 50000:0 /opt/azureml-emulator
USER 50000
WORKDIR /opt/project
ENV PYTHONPATH=/opt/project
ENTRYPOINT ["python", "-m", "emulator"]

FROM apache/airflow:3.3.2-python3.11 AS airflow
COPY --chown=airflow:root requirements.txt /opt/project/requirements.txt
RUN pip install --no-cache-dir -r /opt/project/requirements.txt
# The retraining package as an Airflow provider (its connection types appear in the UI). The
# compose file mounts the live plugins/ over /opt/airflow/plugins; the install points there. Its
# dependencies (plugins/pyproject.toml) are in the lock installed above.
COPY --chown=airflow:root plugins /opt/airflow/plugins
# airflow_local_settings.py, which every Airflow process imports from $AIRFLOW_HOME/config.
COPY --chown=airflow:root config /opt/airflow/config
RUN pip install --no-cache-dir --no-deps -e /opt/airflow/plugins
