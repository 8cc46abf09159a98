# Sourced by deploy/compose/up.sh and deploy/swarm/up.sh (bash, from the repository root): makes the models and
# data folders, picks the containers' user, and without real checkpoints writes tiny RANDOM-WEIGHT models and
# picks deploy/compose/tiny as the config folder (saying so). Reads MODELYARD_TAG, MODELYARD_MODELS_DIR,
# MODELYARD_DATA_DIR, MODELYARD_CONFIG_DIR, MODELYARD_UID, MODELYARD_GID; sets tag, models, data and exports
# MODELYARD_CONFIG_DIR, MODELYARD_UID and MODELYARD_GID.
tag=${MODELYARD_TAG:-latest}
models=${MODELYARD_MODELS_DIR:-./models}
data=${MODELYARD_DATA_DIR:-./data}

# The containers run as the host user, so that what they write under /data is the user's own files (mode 0644 by
# the default umask); as the images' user (10001) when that is root. /data must be writable by that uid: the
# engine would create a missing folder root-owned.
mkdir -p "$models" "$data"
if [[ -z "${MODELYARD_UID:-}" ]]; then
    if [[ $(id -u) -eq 0 ]]; then MODELYARD_UID=10001 MODELYARD_GID=10001; else MODELYARD_UID=$(id -u) MODELYARD_GID=$(id -g); fi
fi
export MODELYARD_UID MODELYARD_GID=${MODELYARD_GID:-$MODELYARD_UID}
if [[ $(stat -c %u "$data") != "$MODELYARD_UID" ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        chown "$MODELYARD_UID:$MODELYARD_GID" "$data"
    else
        chmod a+rwx "$data"  # another user's uid and no root: opening the folder is the way
    fi
fi

if [[ -z "${MODELYARD_CONFIG_DIR:-}" ]]; then
    missing=()
    [[ -f "$models/medsam/medsam_vit_b.pth" ]] || missing+=("$models/medsam/medsam_vit_b.pth")
    [[ -f "$models/biomedclip/open_clip_config.json" ]] || missing+=("$models/biomedclip/ (BiomedCLIP's hub files)")
    if ((${#missing[@]})); then
        say "no real checkpoints (missing: ${missing[*]}):"
        say "MedSAM and BiomedCLIP run tiny RANDOM-WEIGHT models, so masks, boxes and maps are NOT meaningful"
        for service in medsam biomedclip; do
            docker run --rm --user "$(id -u):$(id -g)" --network none \
                -v "$(cd "$models" && pwd):/models" -v "$PWD/deploy/compose:/compose:ro" \
                --entrypoint python "modelyard/$service:$tag" /compose/tiny_models.py "$service"
        done
        export MODELYARD_CONFIG_DIR=./deploy/compose/tiny
    else
        export MODELYARD_CONFIG_DIR=./deploy/config
    fi
fi
