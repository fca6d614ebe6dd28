# Production image: the official Apache Airflow 3.3.2 image on Python 3.11 with this project.
# Build: docker build -t email-sync .   (no Docker engine runs on our dev machines; CI does not build it)
FROM apache/airflow:3.3.2-python3.11

ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    EMAIL_SYNC_CONFIG_DIR=/opt/airflow/include/email_sync

WORKDIR /opt/airflow
# Project metadata first so the dependency layer is cached across code changes.
COPY --chown=airflow:root requirements.txt pyproject.toml ./
COPY --chown=airflow:root email_sync/ email_sync/
COPY --chown=airflow:root sandbox/ sandbox/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -r requirements.txt

COPY --chown=airflow:root dags/ dags/
COPY --chown=airflow:root plugins/ plugins/
COPY --chown=airflow:root include/ include/
COPY --chown=airflow:root airflow_settings.yaml ./
