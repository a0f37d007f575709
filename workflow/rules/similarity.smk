rule score_matches:
    input:
        unpack(match_outputs_of_pair),
    output:
        scores="results/similarity/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv",
        semantic="results/similarity/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.semantic.tsv",
    log:
        "logs/score_matches/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/score_matches/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=similarity_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_matches.py"


rule match_ceiling:
    input:
        unpack(ceiling_match_inputs),
    output:
        table="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.matches.tsv",
        summary="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.summary.tsv",
        examples="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.examples.json",
    log:
        "logs/match_ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.log",
    benchmark:
        "results/benchmarks/match_ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.tsv"
    params:
        settings=matching_settings,
        labels=ceiling_pair_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_ceiling.py"


rule score_ceiling:
    input:
        unpack(ceiling_score_inputs),
    output:
        scores="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.tsv",
    log:
        "logs/score_ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.log",
    benchmark:
        "results/benchmarks/score_ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.tsv"
    params:
        settings=similarity_settings,
        labels=ceiling_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_kept_pairs.py"


rule ceiling_of_layer:
    input:
        scores=ceiling_seed_pair_scores,
        summaries=ceiling_seed_pair_summaries,
    output:
        scores="results/similarity/ceiling/{model}/layer{layer}.tsv",
        summary="results/similarity/ceiling/{model}/layer{layer}.summary.tsv",
    log:
        "logs/ceiling_of_layer/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/ceiling_of_layer/{model}/layer{layer}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/ceiling_of_layer.py"


rule match_ceiling_controls:
    input:
        unpack(ceiling_control_inputs),
    output:
        summary="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.controls.tsv",
        context_only="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.context_only.matches.tsv",
    log:
        "logs/match_ceiling_controls/{model}/layer{layer}/{sae_a}--{sae_b}.log",
    benchmark:
        "results/benchmarks/match_ceiling_controls/{model}/layer{layer}/{sae_a}--{sae_b}.tsv"
    params:
        settings=matching_settings,
        controls=control_settings,
        labels=ceiling_pair_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_ceiling_controls.py"


rule score_ceiling_context_only:
    input:
        unpack(ceiling_context_only_score_inputs),
    output:
        scores="results/similarity/ceiling/{model}/layer{layer}/{sae_a}--{sae_b}.context_only.tsv",
    log:
        "logs/score_ceiling_context_only/{model}/layer{layer}/{sae_a}--{sae_b}.log",
    benchmark:
        "results/benchmarks/score_ceiling_context_only/{model}/layer{layer}/{sae_a}--{sae_b}.tsv"
    params:
        settings=similarity_settings,
        labels=ceiling_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_kept_pairs.py"


rule context_only_ceiling_of_layer:
    input:
        scores=ceiling_seed_pair_context_only_scores,
    output:
        scores="results/similarity/ceiling/{model}/layer{layer}.context_only.tsv",
    log:
        "logs/context_only_ceiling_of_layer/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/context_only_ceiling_of_layer/{model}/layer{layer}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/ceiling_of_layer.py"


rule score_context_only:
    input:
        unpack(context_only_score_inputs),
    output:
        scores="results/similarity/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.context_only.tsv",
    log:
        "logs/score_context_only/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/score_context_only/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=similarity_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_kept_pairs.py"


rule score_untrained:
    input:
        unpack(untrained_score_inputs),
    output:
        scores="results/similarity/{model_a}--{model_b}/untrained/layer{layer_a}--layer{layer_b}.tsv",
    log:
        "logs/score_untrained/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/score_untrained/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=similarity_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_kept_pairs.py"


rule score_lexical:
    input:
        unpack(lexical_score_inputs),
    output:
        scores="results/similarity/{model_a}--{model_b}/lexical/layer{layer_a}--layer{layer_b}.tsv",
    log:
        "logs/score_lexical/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/score_lexical/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=similarity_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/score_kept_pairs.py"


rule compare_residuals:
    input:
        unpack(residual_inputs),
    output:
        scores="results/similarity/{model_a}--{model_b}/residual/layer{layer_a}--layer{layer_b}.tsv",
    log:
        "logs/compare_residuals/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/compare_residuals/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=similarity_settings,
        controls=control_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/compare_residuals.py"


rule residual_table:
    input:
        scores=pair_residual_files,
    output:
        table=report(
            "results/similarity/{model_a}--{model_b}/residual_streams.tsv",
            caption="../report/residual_streams.rst",
            category="Controls",
        ),
    log:
        "logs/residual_table/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/residual_table/{model_a}--{model_b}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/residual_table.py"


rule similarity_tables:
    input:
        scores=pair_score_files,
        semantic=pair_semantic_files,
        ceilings=pair_ceiling_files,
    output:
        table=report(
            "results/similarity/{model_a}--{model_b}/table.tsv",
            caption="../report/similarity_table.rst",
            category="Similarity",
        ),
        scores="results/similarity/{model_a}--{model_b}/scores.tsv",
        heatmaps=report(
            "results/similarity/{model_a}--{model_b}/heatmaps.png",
            caption="../report/heatmaps.rst",
            category="Similarity",
        ),
        heatmaps_raw=report(
            "results/similarity/{model_a}--{model_b}/heatmaps_raw.png",
            caption="../report/heatmaps_raw.rst",
            category="Similarity",
        ),
        semantic=report(
            "results/similarity/{model_a}--{model_b}/semantic.tsv",
            caption="../report/semantic_table.rst",
            category="Semantic subspaces",
        ),
        semantic_plot=report(
            "results/similarity/{model_a}--{model_b}/semantic.png",
            caption="../report/semantic_bars.rst",
            category="Semantic subspaces",
        ),
    log:
        "logs/similarity_tables/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/similarity_tables/{model_a}--{model_b}.tsv"
    params:
        settings=similarity_settings,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/similarity_tables.py"


rule control_tables:
    input:
        controls=pair_control_files,
        context_only=pair_context_only_files,
        context_only_ceilings=pair_context_only_ceiling_files,
        untrained_summaries=pair_untrained_summaries,
        untrained=pair_untrained_scores,
        lexical_summaries=pair_lexical_summaries,
        lexical=pair_lexical_scores,
        full_scores="results/similarity/{model_a}--{model_b}/scores.tsv",
    output:
        controls=report(
            "results/similarity/{model_a}--{model_b}/controls.tsv",
            caption="../report/controls_table.rst",
            category="Controls",
        ),
        context_only=report(
            "results/similarity/{model_a}--{model_b}/context_only_scores.tsv",
            caption="../report/context_only_scores.rst",
            category="Controls",
        ),
        untrained=report(
            "results/similarity/{model_a}--{model_b}/untrained_scores.tsv",
            caption="../report/untrained_scores.rst",
            category="Controls",
        ),
        lexical=report(
            "results/similarity/{model_a}--{model_b}/lexical_scores.tsv",
            caption="../report/lexical_scores.rst",
            category="Controls",
        ),
    log:
        "logs/control_tables/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/control_tables/{model_a}--{model_b}.tsv"
    params:
        settings=similarity_settings,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/control_tables.py"


rule all_scores:
    input:
        scores=all_pair_score_tables,
        semantic=all_pair_semantic_tables,
    output:
        tidy=report(
            "results/similarity/all_scores.tsv",
            caption="../report/all_scores.rst",
            category="Similarity",
        ),
    log:
        "logs/all_scores.log",
    benchmark:
        "results/benchmarks/all_scores.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/all_scores.py"


rule atlas:
    input:
        scores=atlas_score_tables,
        context_only=atlas_context_only_tables,
        manifests=atlas_manifests,
    output:
        table=report("results/atlas/atlas.tsv", caption="../report/atlas.rst", category="Atlas"),
        figure=report("results/atlas/atlas.png", caption="../report/atlas.rst", category="Atlas"),
    log:
        "logs/atlas.log",
    benchmark:
        "results/benchmarks/atlas.tsv"
    params:
        families=model_families,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/atlas.py"


rule depth_profile:
    input:
        scores="results/similarity/{model_a}--{model_b}/scores.tsv",
        manifest_a="resources/models/{model_a}/manifest.json",
        manifest_b="resources/models/{model_b}/manifest.json",
    output:
        profile=report("results/similarity/{model_a}--{model_b}/depth.tsv", caption="../report/depth.rst",
                       category="Depth"),
        trend=report("results/similarity/{model_a}--{model_b}/depth_trend.tsv", caption="../report/depth.rst",
                     category="Depth"),
        figure=report("results/similarity/{model_a}--{model_b}/depth.png", caption="../report/depth.rst",
                      category="Depth"),
    log:
        "logs/depth_profile/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/depth_profile/{model_a}--{model_b}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/depth_profile.py"


rule verdict:
    input:
        unpack(verdict_inputs),
    output:
        verdict=report("results/verdict.md", caption="../report/verdict.rst", category="Verdict"),
        table=report("results/verdict.tsv", caption="../report/verdict_table.rst", category="Verdict"),
    log:
        "logs/verdict.log",
    benchmark:
        "results/benchmarks/verdict.tsv"
    params:
        settings=similarity_settings,
        floors=floor_table,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/verdict.py"
