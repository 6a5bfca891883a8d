# Image for the Airflow components and the local Azure ML emulator in docker-compose.yaml:
# the official Airflow image plus this project's locked requirements.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt /opt/project/requirements.txt
RUN pip install --no-cache-dir -r /opt/project/requirements.txt
COPY --chown=airflow:root emulator /opt/project/emulator
# The retraining package as an Airflow provider (its connection types appear in the UI). The
# compose file mounts the live plugins/ over /opt/airflow/plugins; the install points there.
COPY --chown=airflow:root plugins /opt/airflow/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/airflow/plugins
ENV PYTHONPATH=/opt/project
