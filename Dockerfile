# The node image of cluster.yaml (docs/cluster.md): every node, head and workers, runs it, so a spot
# worker that joins mid-search installs nothing.
#
#   docker build -t YOUR-ACCOUNT.dkr.ecr.us-west-2.amazonaws.com/wsss-search:VERSION .
#
# Base: Ray's CUDA 12.8 image for the Ray this project pins (Python 3.11). torch and torchvision are
# the wheels the project's tests run on, from PyPI; they carry their own CUDA runtime (13.0 for torch
# 2.14.1), so the host needs an NVIDIA driver >= 580 (the GPU AMI in cluster.yaml has it) and the
# image's own CUDA 12.8 libraries are not what torch uses. MLflow is pinned too: a newer server would
# refuse the database a backup restores until `mlflow db upgrade` ran (the head runs it at start).
FROM rayproject/ray:2.60.0-py311-cu128

COPY --chown=ray:users . /home/ray/wsss-search
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" \
 && pip install --no-cache-dir "/home/ray/wsss-search[crf,pretrained]" \
      "ray[tune]==2.60.0" "mlflow==3.17.2" "torch==2.14.1" "torchvision==0.29.1" awscli psycopg2-binary
