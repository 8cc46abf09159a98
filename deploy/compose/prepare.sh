# Sourced by deploy/compose/up.sh and deploy/swarm/up.sh (bash, from the repository root): makes the models and
# data folders, hands /data to the images' user, and without real checkpoints writes tiny RANDOM-WEIGHT models and
# picks deploy/compose/tiny as the config folder (saying so). Reads MODELYARD_TAG, MODELYARD_MODELS_DIR,
# MODELYARD_DATA_DIR, MODELYARD_CONFIG_DIR; sets tag, models, data and exports MODELYARD_CONFIG_DIR.
tag=${MODELYARD_TAG:-latest}
models=${MODELYARD_MODELS_DIR:-./models}
data=${MODELYARD_DATA_DIR:-./data}

# /data must be writable by the images' user (uid 10001); the engine would create a missing folder root-owned.
mkdir -p "$models" "$data"
if [[ $(id -u) -eq 0 ]]; then
    chown 10001:10001 "$data"
elif [[ $(stat -c %u "$data") != 10001 ]]; then
    chmod a+rwx "$data"  # the services run as uid 10001; without root, opening the folder is the way
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
